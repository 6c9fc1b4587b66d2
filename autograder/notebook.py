"""Reading notebooks and deciding which cells the grader executes.

Cells are classified against the course's own release notebook (matched by
cell id) as well as by their metadata, so a student who edits a test cell, or
untags a demo, cannot make the grader run it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MAX_NOTEBOOK_BYTES = 32 * 1024 * 1024
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
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(
            f"{path}: not valid notebook JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "was it edited outside Jupyter? Download it from Jupyter again"
        ) from None
    if not isinstance(data, dict) or "cells" not in data and "worksheets" not in data:
        raise NotebookError(f"{path}: JSON but not a Jupyter notebook (no cells)")
    if data.get("nbformat") != 4:
        data = _upgrade(path, text)
    cells = data.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise NotebookError(f"{path}: the notebook's cells are malformed; save it from Jupyter again")
    seen: set[str] = set()
    for index, cell in enumerate(cells):
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(line, str) for line in source):
            source = "".join(source)
        if not isinstance(source, str):
            raise NotebookError(f"{path}: cell {index + 1}'s source is not text")
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


def nbgrader_meta(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def is_test_cell(cell) -> bool:
    meta = nbgrader_meta(cell)
    grade_id = str(meta.get("grade_id", ""))
    return bool(meta.get("grade")) and not meta.get("solution") or grade_id.startswith("test_")


def is_demo_cell(cell) -> bool:
    tags = cell.get("metadata", {}).get("tags", [])
    return isinstance(tags, list) and DEMO_TAG in tags


def cells_to_run(submitted: Notebook, release: Notebook | None) -> list[CodeCell]:
    """The code cells a "Run All" would execute, less demos and test cells.

    A cell is skipped when it is a demo or test cell in the submission, or when
    its id names a demo or test cell of the release.
    """
    skip_ids = set()
    if release is not None:
        skip_ids = {c.get("id") for c in release.cells if is_demo_cell(c) or is_test_cell(c)}
    cells = []
    for index, cell in enumerate(submitted.cells):
        if cell.get("cell_type") != "code":
            continue
        if is_demo_cell(cell) or is_test_cell(cell) or cell.get("id") in skip_ids:
            continue
        cells.append(CodeCell(index, str(cell.get("id", index)), cell.get("source", "")))
    return cells


def manual_answers(nb: Notebook, manual_ids: set[str]) -> dict[str, str]:
    """Text of the manually graded cells (free-text checkpoints), by grade_id."""
    out = {}
    for cell in nb.cells:
        gid = nbgrader_meta(cell).get("grade_id")
        if gid in manual_ids:
            out[gid] = cell.get("source", "")
    return out
