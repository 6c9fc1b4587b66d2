"""Shared fixtures: a course with short limits, and the demo class graded once per session."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "demo"))

import students as demo_students  # noqa: E402

from autograder.config import load_course  # noqa: E402

FAST_LIMITS = {"cell_seconds": 4, "notebook_seconds": 60, "item_seconds": 4}


def fast_course_file(tmp: Path, limits: dict | None = None) -> Path:
    """course.yml with short time limits (FAST_LIMITS, or `limits`), so hostile submissions cost seconds,
    not minutes."""
    data = yaml.safe_load((ROOT / "course.yml").read_text())
    data["grading"]["limits"].update(limits or FAST_LIMITS)
    path = tmp / "course.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def course():
    return load_course()


@pytest.fixture(scope="session")
def fast_course(tmp_path_factory):
    return load_course(fast_course_file(tmp_path_factory.mktemp("course")))


@pytest.fixture(scope="session")
def demo_class(tmp_path_factory):
    dest = tmp_path_factory.mktemp("submitted")
    demo_students.write_class(dest)
    return dest


@pytest.fixture(scope="session")
def graded_demo(fast_course, demo_class, tmp_path_factory):
    """The demo class graded once: (summary, output folder)."""
    from autograder.grade import grade_all

    out = tmp_path_factory.mktemp("out")
    summary = grade_all(fast_course, demo_class, out, workers=2, progress=None)
    return summary, out


def copy_class(src: Path, dest: Path, students: list[str], notebooks: list[str] | None = None) -> Path:
    """Copy these students' folders of the demo class (only these notebook ids, when given)."""
    for s in students:
        if notebooks is None:
            shutil.copytree(src / s, dest / s)
            continue
        for path in (src / s).glob("*/*.ipynb"):
            if path.stem in notebooks:
                (dest / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, dest / path.relative_to(src))
    return dest


@pytest.fixture(scope="session")
def pool():
    """Grading workers (fresh processes with torch imported), shared by the session."""
    from autograder.worker import Pool

    with Pool(1) as p:
        yield p


@pytest.fixture(scope="session")
def keys(course, pool):
    """The full answer key of every notebook, computed from solutions/ (cached on disk)."""
    from autograder import reference
    from autograder.worker import run_reference

    class Keys(dict):
        def __missing__(self, nb_id):
            self[nb_id] = reference.load_key(course, course.notebook(nb_id), run_reference)
            return self[nb_id]

    return Keys()


def results_of(out: Path, student: str) -> dict:
    """A student's results.json as {test name: test}."""
    import json

    data = json.loads((out / "results" / f"{student}.json").read_text())
    return {t["name"]: t for t in data["tests"]}


def gradebook_rows(out: Path) -> dict[str, dict[str, str]]:
    import csv

    with open(out / "gradebook.csv") as f:
        return {row["student_id"]: row for row in csv.DictReader(f)}


def solution_namespace(path: Path) -> dict:
    """A solution notebook's cells (no demos, no checks) executed in one namespace: the reference objects."""
    from autograder import notebook

    ns: dict = {}
    for cell in notebook.cells_to_run(notebook.read(path), None):
        exec(compile(cell.source, f"<cell {cell.index}>", "exec"), ns)
    return ns


def grade_students(fast_course, notebook_id: str, students: dict, tmp_path_factory) -> tuple[Path, Path]:
    """Grade ad-hoc students of one notebook ({student: edits}, as in demo/classes) once: (SUBMITTED, OUT)."""
    from autograder.grade import grade_all

    dest = tmp_path_factory.mktemp(f"{notebook_id[:5]}_submitted")
    demo_students.write_class(dest, {student: {notebook_id: edits} for student, edits in students.items()})
    out = tmp_path_factory.mktemp(f"{notebook_id[:5]}_out")
    grade_all(fast_course, dest, out, workers=2, progress=None)
    return dest, out
