"""The demo class: students written as edits to the released notebooks.

Each notebook's realistic students live in demo/classes/<notebook>.py as
`STUDENTS = {student: {cell grade_id or "+name" or "*": source}}`: a grade_id
replaces that exercise cell, a "+name" key adds a new code cell at the end,
and "*": "solution" first fills every exercise with the reference solution. `write_class(dest)` writes dest/<student>/<week>/<notebook>.ipynb in
nbgrader's submitted layout, from the current weeks/ notebooks, so the demo
always matches the course. Run: python demo/students.py [DEST] (default
demo/submitted).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autograder.config import load_course  # noqa: E402

SOLUTION = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n", re.M)

def load_students() -> dict[str, dict[str, dict[str, str]]]:
    """Every student of the demo class: {student: {notebook id: edits}}.

    `ada_complete` (every solution) and `ben_untouched` (every stub) take every
    notebook; the others come from demo/classes/<notebook>.py (`STUDENTS`).
    """
    import importlib.util

    course = load_course()
    students: dict[str, dict[str, dict[str, str]]] = {"ada_complete": {}, "ben_untouched": {}}
    for nb in course.notebooks:
        if not (ROOT / "weeks" / nb.path).exists():
            continue  # not built yet
        students["ada_complete"][nb.id] = {"*": "solution"}
        students["ben_untouched"][nb.id] = {}
        path = ROOT / "demo" / "classes" / f"{nb.id}.py"
        if path.exists():
            spec = importlib.util.spec_from_file_location(f"demo_class_{nb.id}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            for name, edits in module.STUDENTS.items():
                students.setdefault(name, {})[nb.id] = edits
    return students


def solution_sources(course_nb) -> dict[str, str]:
    """The solution of each exercise cell, markers removed (what a complete student writes)."""
    src = nbformat.read(ROOT / "solutions" / course_nb.path, as_version=4)
    out = {}
    for cell in src.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution"):
            out[meta["grade_id"]] = SOLUTION.sub("", cell.source)
    return out


def make_notebook(course_nb, edits: dict[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / "weeks" / course_nb.path, as_version=4)
    replacements = dict(solution_sources(course_nb)) if edits.get("*") == "solution" else {}
    replacements.update({k: v for k, v in edits.items() if not k.startswith(("+", "*"))})
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.cell_type == "code" and gid in replacements:
            cell.source = replacements[gid]
    for name, source in edits.items():
        if name.startswith("+"):
            new = nbformat.v4.new_code_cell(source)
            new["id"] = f"student-{name[1:]}"
            nb.cells.append(new)
    return nb


def write_class(dest: Path, students=None) -> list[Path]:
    course = load_course()
    students = students if students is not None else load_students()
    written = []
    for student, notebooks in students.items():
        for nb_id, edits in notebooks.items():
            course_nb = course.notebook(nb_id)
            path = Path(dest) / student / course_nb.path
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(make_notebook(course_nb, edits), path)
            written.append(path)
    return written


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", nargs="?", type=Path, default=ROOT / "demo" / "submitted")
    parser.add_argument("--notebook", action="append", help="only these notebook ids")
    args = parser.parse_args()
    dest = args.dest
    students = {
        name: {nb: edits for nb, edits in nbs.items() if not args.notebook or nb in args.notebook}
        for name, nbs in load_students().items()
    }
    paths = write_class(dest, {k: v for k, v in students.items() if v})
    print(f"wrote {len(paths)} notebooks of {len({p.relative_to(dest).parts[0] for p in paths})} students to {dest}")
