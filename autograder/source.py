"""The source notebooks in solutions/: canonical form, and a check that they are in it.

`normalize` gives every source notebook the same stored form, so diffs stay
reviewable: no outputs, cell metadata limited to `nbgrader` and `tags`,
nbgrader fields completed (points come from course.yml, the one place they
are written), graded cells' ids equal to their grade_id, and a fixed kernelspec.
Authors may draft a notebook as a jupytext percent script (`# %%` cells with
`nbgrader={...}` or `tags=[...]`) and import it with
`python -m autograder normalize draft.py --into solutions/week1/dayNN.ipynb`.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .config import ROOT, Course, Notebook

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
CELL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
REUSE_PREFIX = "reuse_"
"""grade_id prefix of ungraded solution cells where students paste their code from earlier days."""


class SourceError(ValueError):
    """A source notebook that breaks the course's conventions."""


def source_path(nb: Notebook, root: Path = ROOT) -> Path:
    return root / "solutions" / nb.path


def _points(course_nb: Notebook, item_id: str, where: str) -> float:
    for item in course_nb.items:
        if item.id == item_id:
            return item.points
    raise SourceError(f"{where}: cell grade_id {item_id!r} is not an item of {course_nb.id} in course.yml")


def normalize(nb, course_nb: Notebook, where: str = ""):
    """Return `nb` (an nbformat notebook) in canonical stored form (see the module docstring)."""
    import nbformat

    where = where or course_nb.id
    cells, seen = [], set()
    for index, cell in enumerate(nb.cells):
        meta = {}
        tags = cell.get("metadata", {}).get("tags")
        if tags:
            meta["tags"] = list(tags)
        grader = dict(cell.get("metadata", {}).get("nbgrader", {}))
        source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        if grader:
            grade_id = grader.get("grade_id")
            if not grade_id:
                raise SourceError(f"{where}: cell {index} has nbgrader metadata but no grade_id")
            solution, grade = bool(grader.get("solution")), bool(grader.get("grade"))
            full = {"grade": grade, "grade_id": grade_id, "locked": not solution, "schema_version": 3,
                    "solution": solution, "task": False}
            if grade:
                item_id = grade_id[len("test_"):] if not solution and grade_id.startswith("test_") else grade_id
                full["points"] = _points(course_nb, item_id, where)
            elif not grade_id.startswith(REUSE_PREFIX):
                _points(course_nb, grade_id, where)
            meta["nbgrader"] = full
            cell_id = grade_id
        else:
            cell_id = cell.get("id", "")
            if not CELL_ID.match(cell_id or "") or cell_id in seen:
                cell_id = _content_id(cell.cell_type, source, seen)
        if cell_id in seen:
            raise SourceError(f"{where}: two cells have the id {cell_id!r}")
        seen.add(cell_id)
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(source=source, metadata=meta)
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(source=source, metadata=meta)
        else:
            new = nbformat.v4.new_raw_cell(source=source, metadata=meta)
        new["id"] = cell_id
        cells.append(new)
    out = nbformat.v4.new_notebook(cells=cells)
    out.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    out.nbformat, out.nbformat_minor = 4, 5
    return out


def _content_id(cell_type: str, source: str, seen: set[str]) -> str:
    """A cell id derived from the cell's content, so re-importing a draft keeps unchanged cells' ids."""
    base = "cell-" + hashlib.sha1(f"{cell_type}:{source}".encode()).hexdigest()[:8]
    cell_id, n = base, 1
    while cell_id in seen:
        n += 1
        cell_id = f"{base}-{n}"
    return cell_id


def dumps(nb) -> str:
    """The stored text of a notebook (nbformat's own layout, one trailing newline)."""
    import nbformat

    return nbformat.writes(nb) + "\n"


def read_draft(path: Path):
    """Read a source notebook, or a jupytext percent draft (.py)."""
    import nbformat

    if path.suffix == ".py":
        import jupytext

        nb = jupytext.read(path, fmt="py:percent")
        for cell in nb.cells:
            cell.pop("id", None)  # jupytext's ids are random: normalize derives them from the content
        return nb
    return nbformat.read(path, as_version=4)


def stale_sources(course: Course, root: Path = ROOT, only: list[str] | None = None) -> list[str]:
    """Source notebooks that are not in canonical form (empty when all are)."""
    import nbformat

    stale = []
    for nb in course.notebooks:
        if only and nb.id not in only:
            continue
        path = source_path(nb, root)
        if not path.exists():
            stale.append(f"{path}: missing")
            continue
        text = path.read_text(encoding="utf-8")
        if dumps(normalize(nbformat.reads(text, as_version=4), nb, str(path))) != text:
            stale.append(f"{path}: not normalized; run python -m autograder normalize")
    return stale
