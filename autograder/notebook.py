"""Reading notebooks and deciding which cells the grader executes.

Cells are classified against the course's own release notebook (matched by
cell id) as well as by their metadata, so a student who edits a test cell, or
untags a demo, cannot make the grader run it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nbformat

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


def read(path: Path) -> nbformat.NotebookNode:
    """Read a notebook, upgrading old formats, with a clear message when it cannot be."""
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
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # nbformat raises many kinds for malformed input
        raise NotebookError(f"{path}: not a readable notebook ({type(exc).__name__}: {exc})") from None
    for cell in nb.cells:
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
        if not isinstance(cell.get("source", ""), str):
            raise NotebookError(f"{path}: a cell's source is not text")
    return nb


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


def cells_to_run(submitted: nbformat.NotebookNode, release: nbformat.NotebookNode | None) -> list[CodeCell]:
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


def manual_answers(nb: nbformat.NotebookNode, manual_ids: set[str]) -> dict[str, str]:
    """Text of the manually graded cells (free-text checkpoints), by grade_id."""
    out = {}
    for cell in nb.cells:
        gid = nbgrader_meta(cell).get("grade_id")
        if gid in manual_ids:
            out[gid] = cell.get("source", "")
    return out
