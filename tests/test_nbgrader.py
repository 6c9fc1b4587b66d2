"""The repository is a working nbgrader course, and real nbgrader agrees with our build and our grader.

`nbgrader generate_assignment` must reproduce weeks/ byte for byte, and
`nbgrader autograde` (which runs the hidden-test regions in a Jupyter kernel)
must pass exactly the items that `grade` gives full points. nbgrader is
all-or-nothing per test cell while `grade` splits an item's points over its
cases, so "the same points" means: for every auto-graded item, nbgrader gives
the item's points exactly when `grade` gives it full points, and 0 otherwise.
For a submission whose items are each all right or all wrong the totals are
then equal.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from autograder import notebook as nbmod
from autograder.config import ROOT, load_course

COURSE = load_course()
SOURCED = [nb for nb in COURSE.notebooks if (ROOT / "solutions" / nb.path).exists()]
WEEKS = sorted({nb.week for nb in SOURCED})
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(?P<body>.*?)### END HIDDEN TESTS", re.S)
KERNEL = "attention-course"


def nbgrader_env(jupyter_path: Path) -> dict:
    """nbgrader with this interpreter: its scripts (alembic) on PATH, a kernelspec that runs sys.executable."""
    spec = jupyter_path / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "course venv (tests)", "language": "python",
    }))
    env = dict(os.environ)
    env.update(JUPYTER_PATH=str(jupyter_path), MPLBACKEND="Agg", PYTHONPATH=str(ROOT),
               PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
    env.pop("ATTENTION_KERNEL", None)
    return env


def nbgrader(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def make_course(dest: Path, notebooks) -> Path:
    """An nbgrader course folder: this repository's nbgrader_config.py and the given source notebooks."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "nbgrader_config.py", dest)
    for nb in notebooks:
        target = dest / "solutions" / nb.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "solutions" / nb.path, target)
    return dest


def test_config_describes_this_repository():
    """Does nbgrader_config.py make solutions/ the source, weeks/ the release and submitted/ the inbox, here?"""
    from traitlets.config.loader import PyFileConfigLoader

    from autograder.lms import NBGRADER_PATTERN

    config = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    course_dir = config.CourseDirectory
    assert Path(course_dir.root) == ROOT
    assert (course_dir.source_directory, course_dir.release_directory, course_dir.submitted_directory) == (
        "solutions", "weeks", "submitted")
    assert config.ExecutePreprocessor.kernel_name == KERNEL
    assert config.FileNameCollectorPlugin.named_regexp == NBGRADER_PATTERN


@pytest.mark.parametrize("nb", SOURCED, ids=lambda nb: nb.id)
def test_every_test_cell_runs_the_hidden_cases(nb):
    """Does each test cell of the source notebook start with a hidden region that runs check_all on its own item?

    First, so that the reference versions of earlier pieces are in place before
    the public check runs, as in the grader (see autograder/hidden_tests.py).
    """
    source = nbformat.read(ROOT / "solutions" / nb.path, as_version=4)
    tests = {nbmod.nbgrader_meta(c)["grade_id"]: c.source for c in source.cells
             if c.cell_type == "code" and nbmod.is_test_cell(c)}
    assert tests, f"{nb.id} has no test cells"
    for grade_id, text in tests.items():
        item = grade_id.removeprefix("test_")
        public = re.search(r"^check\((\w+(?:,\s*item=[\"']\w+[\"'])?)\)", text, re.M)
        region = (f"### BEGIN HIDDEN TESTS\nfrom autograder.hidden_tests import check_all\n"
                  f"check_all({public[1] if public else item})\n### END HIDDEN TESTS\n")
        match = HIDDEN.search(text)
        assert match and text.startswith("### BEGIN HIDDEN TESTS"), (
            f"solutions/{nb.path}: test cell {grade_id} should start with\n{region}")
        call = re.search(r"check_all\((\w+)(?:,\s*item=[\"'](\w+)[\"'])?\)", match["body"])
        assert call and (call[2] or call[1]) == item, f"{grade_id}: the hidden region does not check {item}"


def _students(nb) -> dict[str, dict]:
    """All right, and one realistic student (the first whose edits add no hostile cells), who fails some items.
    (All wrong, the untouched stubs, is the README test's ben_untouched.)"""
    sys.path.insert(0, str(ROOT / "demo"))
    import students as demo

    everyone = demo.load_students()
    chosen = {"ada_complete": everyone["ada_complete"][nb.id]}
    for name in sorted(everyone):
        edits = everyone[name].get(nb.id)
        if name not in chosen and edits and not any(k.startswith("+") for k in edits):
            chosen[name] = edits
            break
    return chosen


def without_demos(submitted: Path) -> None:
    """Drop the demo cells (plots, training runs) from every submitted notebook: neither grader scores them
    (`grade` skips them, nbgrader's test cells do not use them), and test_notebooks runs each once."""
    for path in submitted.rglob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        notebook.cells = [c for c in notebook.cells if not nbmod.is_demo_cell(c)]
        nbformat.write(notebook, path)


@pytest.fixture(scope="module")
def autograded(keys, tmp_path_factory):
    """Each notebook submitted by the students of `_students`, autograded by nbgrader once per week (after its
    generate_assignment) and graded by `grade` once: {"nbgrader": {(student, notebook id): {item: points}},
    "grade": {student: {item: points}}, "generated": {week: {file name: the notebook nbgrader released}}}."""
    sys.path.insert(0, str(ROOT / "demo"))
    import students as demo

    from nbgrader.api import Gradebook as NbgraderGradebook

    from autograder.gradebook import Gradebook
    from autograder.grade import grade_all

    root = tmp_path_factory.mktemp("autograde")
    env = nbgrader_env(root / "jupyter")
    submissions: dict[str, dict] = {}
    for nb in SOURCED:
        keys[nb.id]  # the full key, computed once (the hidden regions read it from .cache/keys)
        for student, edits in _students(nb).items():
            submissions.setdefault(student, {})[nb.id] = edits
    demo.write_class(root / "submitted", submissions)
    without_demos(root / "submitted")
    # One course folder per week (each with its own nbgrader database), both weeks at once: two cores.
    courses, running = {}, {}
    for week in WEEKS:
        courses[week] = course = make_course(root / f"course-{week}", [nb for nb in SOURCED if nb.week == week])
        for student_dir in (root / "submitted").iterdir():
            if (student_dir / week).is_dir():
                shutil.copytree(student_dir / week, course / "submitted" / student_dir.name / week)
        steps = [["generate_assignment", week, "--force"], ["autograde", week, "--create", "--force"]]
        running[week] = subprocess.Popen(
            " && ".join(" ".join([sys.executable, "-m", "nbgrader", *step]) for step in steps), shell=True,
            cwd=course, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = time.monotonic()
    for week, proc in running.items():
        out, _ = proc.communicate(timeout=1800)
        assert proc.returncode == 0, f"nbgrader generate_assignment/autograde {week} failed:\n{out[-5000:]}"
    print(f"nbgrader generate_assignment and autograde, both weeks at once: {time.monotonic() - started:.1f} s")
    theirs: dict = {}
    generated: dict[str, dict[str, bytes]] = {}
    for week, course in courses.items():
        generated[week] = {p.name: p.read_bytes() for p in (course / "weeks" / week).glob("*.ipynb")}
        with NbgraderGradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
            for student, notebooks in submissions.items():
                for nb_id in notebooks:
                    nb = COURSE.notebook(nb_id)
                    if nb.week == week:
                        sub = gb.find_submission_notebook(nb.id, nb.week, student)
                        theirs[student, nb.id] = {g.name.removeprefix("test_"): g.score for g in sub.grades
                                                  if g.name.startswith("test_")}
    grade_all(COURSE, root / "submitted", root / "out", workers=2, progress=None)
    book = Gradebook(root / "out" / "gradebook.db")
    ours = book.scores()
    book.close()
    return {"nbgrader": theirs, "grade": ours, "generated": generated}


@pytest.mark.parametrize("week", WEEKS)
def test_generate_assignment_reproduces_weeks(week, autograded):
    """Does real `nbgrader generate_assignment <week>` write exactly the committed weeks/ notebooks?"""
    notebooks = [nb for nb in SOURCED if nb.week == week]
    generated = autograded["generated"][week]
    assert sorted(generated) == sorted(f"{nb.id}.ipynb" for nb in notebooks)
    for nb in notebooks:
        assert generated[f"{nb.id}.ipynb"] == (ROOT / "weeks" / nb.path).read_bytes(), (
            f"nbgrader's weeks/{nb.path} differs from ours: run python -m autograder build")


@pytest.mark.parametrize("nb", SOURCED, ids=lambda nb: nb.id)
def test_autograde_passes_the_items_grade_gives_full_points(nb, autograded):
    """Does `nbgrader autograde` give an item its points exactly when `python -m autograder grade` gives full points?"""
    source = (ROOT / "solutions" / nb.path).read_text()
    assert "### BEGIN HIDDEN TESTS" in source, f"{nb.id} has no hidden-test regions"
    theirs, ours = autograded["nbgrader"], autograded["grade"]
    outcomes = set()
    for student in _students(nb):
        for item in nb.auto_items:
            full = ours[student][item.id] == item.points
            outcomes.add(full)
            assert theirs[student, nb.id][item.id] == (item.points if full else 0), (
                f"{student} {item.id}: nbgrader {theirs[student, nb.id][item.id]}, grade {ours[student][item.id]} "
                f"of {item.points}")
    assert outcomes == {True, False}, "the submissions should include both passing and failing items"
    assert sum(theirs["ada_complete", nb.id].values()) == sum(ours["ada_complete"][i.id] for i in nb.auto_items)


def test_check_all_raises_when_a_hidden_case_fails(keys):
    """Does check_all fail a wrong function and a wrong quiz letter (which the public check cannot judge) and pass right ones?"""
    from autograder.hidden_tests import HiddenTestFailed, check_all

    nb = COURSE.notebook("day06_scaled_dot_product_attention")
    keys[nb.id]
    namespace: dict = {}
    exec("import torch\n"
         "def attention_flops(n_queries, n_keys, d_k, d_v):\n"
         "    return 2 * n_queries * n_keys * d_k + 2 * n_queries * n_keys * d_v\n"
         "def wrong(n_queries, n_keys, d_k, d_v):\n"
         "    return 4 * n_queries * n_keys * d_k\n", namespace)
    check_all(namespace["attention_flops"])
    wrong = namespace["wrong"]
    wrong.__name__ = "attention_flops"
    with pytest.raises(HiddenTestFailed) as err:
        check_all(wrong)
    assert "attention_flops" in err.value.text and "hidden" in err.value.text
    with pytest.raises(HiddenTestFailed):
        check_all("A", item="quiz_sqrt_dk")
    check_all("B", item="quiz_sqrt_dk")


def readme_nbgrader_block() -> str:
    """The shell block of README.md that runs nbgrader (the one with `nbgrader generate_assignment`)."""
    blocks = re.findall(r"^```sh\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    found = [b for b in blocks if "nbgrader generate_assignment" in b]
    assert len(found) == 1, "README.md should have one ```sh block with the nbgrader commands"
    return found[0]


def fresh_clone(dest: Path) -> Path:
    """What a fresh clone holds for nbgrader: nbgrader_config.py, solutions/, the committed weeks/; no database."""
    dest.mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", dest)
    shutil.copytree(ROOT / "solutions", dest / "solutions")
    shutil.copytree(ROOT / "weeks", dest / "weeks")
    (dest / ".venv").symlink_to(Path(sys.prefix))  # `make` made it; the block puts its bin/ on PATH
    return dest


def test_readme_nbgrader_commands_work_on_a_fresh_clone(keys, tmp_path):
    """Do the nbgrader commands README.md prints, run as printed on a fresh clone, grade a week (and are their
    flags needed), with checksum warnings for the test cells only, as the README explains?"""
    block = readme_nbgrader_block()
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert any(c.startswith("nbgrader generate_assignment week1") for c in commands)
    assert any(c.startswith("nbgrader autograde week1") for c in commands)
    nb = COURSE.notebook("day06_scaled_dot_product_attention")
    assert nb.week == "week1"
    keys[nb.id]  # the hidden-test regions read the full key from .cache/keys
    sys.path.insert(0, str(ROOT / "demo"))
    import students as demo

    everyone = demo.load_students()
    chosen = {s: {nb.id: everyone[s][nb.id]} for s in ("ada_complete", "ben_untouched")}
    env = nbgrader_env(tmp_path / "jupyter")

    # The README's reason for --force: without it nothing is recorded, and autograde cannot run.
    bare = fresh_clone(tmp_path / "bare")
    demo.write_class(bare / "submitted", chosen)
    skip = subprocess.run("nbgrader generate_assignment week1 && nbgrader autograde week1 --create", shell=True,
                          cwd=bare, env=env, capture_output=True, text=True, timeout=600)
    assert "Skipping existing assignment" in skip.stderr
    assert skip.returncode != 0 and "No assignment with ID 'week1' exists in the database" in skip.stderr

    course = fresh_clone(tmp_path / "clone")
    demo.write_class(course / "submitted", chosen)
    without_demos(course / "submitted")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=course, env=env, capture_output=True,
                          text=True, timeout=1200)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    for path in (ROOT / "weeks" / nb.week).glob("*.ipynb"):
        assert (course / "weeks" / nb.week / path.name).read_bytes() == path.read_bytes(), path.name
    with open(course / "grades.csv", newline="") as f:
        grades = {r["student_id"]: r for r in csv.DictReader(f) if r["assignment"] == nb.week}
    auto = sum(i.points for i in nb.auto_items)
    assert float(grades["ada_complete"]["score"]) == auto  # every test cell of the notebook passes
    assert float(grades["ben_untouched"]["score"]) < auto
    checksum = re.findall(r"Attribute 'checksum' for cell (\S+) has changed", log)
    assert checksum, "the README explains checksum warnings that no longer appear"
    assert all(cell.startswith("test_") for cell in checksum), sorted(set(checksum))
    assert {c.removeprefix("test_") for c in checksum} == {i.id for i in nb.auto_items}
