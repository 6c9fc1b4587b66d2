"""Reading notebooks and deciding which cells the grader executes.

Cells are classified against the course's own release notebook (matched by
cell id) as well as by their metadata, so a student who edits a test cell, or
untags a demo, cannot make the grader run it. `read` raises NotebookError, and
nothing else, on any file content; the accessors accept any JSON.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .wire import json_shape_problem

MAX_NOTEBOOK_BYTES = 32 * 1024 * 1024
MAX_NOTEBOOK_DEPTH = 64
"""JSON nesting; Jupyter writes 6 or 7 levels, a few more with widget state."""
MAX_NOTEBOOK_ELEMENTS = 500_000
"""JSON containers and scalars (each line of source or output is one); about 45 MB once parsed, at worst."""
DEMO_TAG = "demo"


class NotebookError(ValueError):
    """A notebook that cannot be read; the message names the file and what to do."""


@dataclass(frozen=True)
class CodeCell:
    index: int
    """Position among all cells (0-based), as shown in Jupyter."""
    cell_id: str
    source: str


class Notebook(dict):
    """A notebook as plain JSON data (a dict), with `.cells` for convenience."""

    @property
    def cells(self) -> list[dict]:
        return self["cells"]


def read(path: Path) -> Notebook:
    """Read a notebook, upgrading old formats, with a clear message when it cannot be.

    Version 4 notebooks are parsed as JSON and checked for what grading needs
    (nbformat's full schema validation is slow to import and stricter than
    Jupyter itself); older versions are upgraded with nbformat.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise NotebookError(f"{path}: cannot be read ({exc.strerror})") from None
    if size == 0:
        raise NotebookError(f"{path}: the file is empty; save the notebook in Jupyter and submit it again")
    if size > MAX_NOTEBOOK_BYTES:
        raise NotebookError(
            f"{path}: the file is {size / 2**20:.0f} MiB, more than {MAX_NOTEBOOK_BYTES // 2**20} MiB; "
            "clear the outputs (Kernel > Restart & Clear Output) and save again"
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotebookError(f"{path}: not UTF-8 text (byte {exc.start}); save it from Jupyter again") from None
    problem = json_shape_problem(raw, MAX_NOTEBOOK_DEPTH, MAX_NOTEBOOK_ELEMENTS)
    if problem:
        raise NotebookError(f"{path}: not a notebook Jupyter writes (its JSON {problem}); clear large outputs "
                            "(Kernel > Restart & Clear Output) and save it from Jupyter again")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(
            f"{path}: not valid notebook JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "was it edited outside Jupyter? Download it from Jupyter again"
        ) from None
    except (RecursionError, MemoryError, ValueError):  # ValueError: e.g. a number of more than 4300 digits
        raise NotebookError(f"{path}: not a notebook Jupyter writes (its JSON nests too deeply, or holds a value "
                            "too large); save it from Jupyter again") from None
    if not isinstance(data, dict) or "cells" not in data and "worksheets" not in data:
        raise NotebookError(f"{path}: JSON but not a Jupyter notebook (no cells)")
    if data.get("nbformat") != 4:
        data = _upgrade(path, text)
    cells = data.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise NotebookError(f"{path}: the notebook's cells are malformed; save it from Jupyter again")
    seen: set[str] = set()
    for index, cell in enumerate(cells):
        source = _source(cell)
        if source is None:
            raise NotebookError(f"{path}: cell {index + 1}'s source is not text; save the notebook from Jupyter again")
        cell["source"] = source
        if not isinstance(cell.get("metadata", {}), dict):
            cell["metadata"] = {}
        cell_id = cell.get("id")
        if not isinstance(cell_id, str) or cell_id in seen:
            cell["id"] = f"cell-{index}"  # missing or duplicate ids: fall back to the position
        seen.add(cell["id"])
    return Notebook(data)


def _upgrade(path: Path, text: str) -> dict:
    import nbformat

    try:
        return json.loads(nbformat.writes(nbformat.reads(text, as_version=4)))
    except Exception as exc:  # nbformat raises many kinds for malformed input
        raise NotebookError(f"{path}: an old or malformed notebook that cannot be upgraded "
                            f"({type(exc).__name__}: {exc}); open and save it in a current Jupyter") from None


# The accessors below take any JSON (a cell that is a list, metadata that is a number, a
# grade_id that is a dict...) and treat what has the wrong type as absent; they never raise.

def _cells(nb) -> list:
    cells = nb.get("cells") if isinstance(nb, dict) else None
    return cells if isinstance(cells, list) else []


def _metadata(cell) -> dict:
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    return meta if isinstance(meta, dict) else {}


def _source(cell) -> str | None:
    """A cell's source as one string ("" when absent); None when it is not text."""
    source = cell.get("source", "") if isinstance(cell, dict) else None
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        return "".join(source)
    return source if isinstance(source, str) else None


def _cell_id(cell) -> str | None:
    cell_id = cell.get("id") if isinstance(cell, dict) else None
    return cell_id if isinstance(cell_id, str) else None


def nbgrader_meta(cell) -> dict:
    meta = _metadata(cell).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def grade_id(cell) -> str | None:
    """The cell's nbgrader grade_id, when it is a string."""
    gid = nbgrader_meta(cell).get("grade_id")
    return gid if isinstance(gid, str) else None


def is_test_cell(cell) -> bool:
    meta = nbgrader_meta(cell)
    return bool(meta.get("grade")) and not meta.get("solution") or (grade_id(cell) or "").startswith("test_")


def is_demo_cell(cell) -> bool:
    tags = _metadata(cell).get("tags", [])
    return isinstance(tags, list) and DEMO_TAG in tags


def code_cell_numbers(nb) -> dict[int, int]:
    """{position among all cells (0-based): code cell number}, numbered as Jupyter's In [n] after a Run All:
    code cells only, from 1, demos and test cells included."""
    numbers: dict[int, int] = {}
    for index, cell in enumerate(_cells(nb)):
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            numbers[index] = len(numbers) + 1
    return numbers


def cells_to_run(submitted: Notebook, release: Notebook | None) -> list[CodeCell]:
    """The code cells a "Run All" would execute, less demos and test cells.

    A cell is skipped when it is a demo or test cell in the submission, or when
    its id names a demo or test cell of the release.
    """
    skip_ids = {_cell_id(c) for c in _cells(release) if is_demo_cell(c) or is_test_cell(c)} - {None}
    cells = []
    for index, cell in enumerate(_cells(submitted)):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        cell_id = _cell_id(cell)
        if is_demo_cell(cell) or is_test_cell(cell) or cell_id in skip_ids:
            continue
        cells.append(CodeCell(index, cell_id if cell_id is not None else str(index), _source(cell) or ""))
    return cells


def manual_answers(nb: Notebook, manual_ids: set[str]) -> dict[str, str]:
    """Text of the manually graded cells (free-text checkpoints), by grade_id."""
    out = {}
    for cell in _cells(nb):
        gid = grade_id(cell)
        if gid is not None and gid in manual_ids:
            out[gid] = _source(cell) or ""
    return out
