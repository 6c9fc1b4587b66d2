"""`python -m autograder new` (autograder/scaffold.py): a new exercise scaffolded into a copy of the course,
written, built and graded there; the refusals; and `build` refusing a mistake that the reference makes too."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import scaffold, wire
from autograder.__main__ import main
from autograder.config import ROOT, load_course
from autograder.crosscheck import check_course_files
from conftest import gradebook_rows, results_of

NB = "day06_scaled_dot_product_attention"
ITEM = "double_it"
SCAFFOLDED = ("course.yml", "solutions/week1/{nb}.ipynb", "autograder/exercises/{nb}.py", "autograder/hidden/{nb}.py")
"""The files `new` writes, relative to the course."""
PLACEHOLDER = f'raise NotImplementedError(\\"write the reference solution of {ITEM} here\\")'
"""The scaffolded solution's body, as it is stored in the notebook's JSON."""
SOLUTION = "return 2 * x"
"""The solution the tests write in its place."""
CONTRACT = ROOT / "docs" / "contract.md"


def copy_course(dest: Path) -> Path:
    """A copy of the course (autograder/, solutions/, weeks/, course.yml, the contract if any) at `dest`."""
    for name in ("autograder", "solutions", "weeks"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "course.yml", dest / "course.yml")
    if CONTRACT.is_file():
        (dest / "docs").mkdir()
        shutil.copy2(CONTRACT, dest / "docs" / "contract.md")
    return dest


def run(course: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m autograder --course course.yml ARGS` in the copy, with the copy's package (in the workers too)."""
    env = dict(os.environ, PYTHONPATH=str(course))
    return subprocess.run([sys.executable, "-m", "autograder", "--course", "course.yml", *args], cwd=course,
                          env=env, capture_output=True, text=True, timeout=600)


def files(course: Path) -> dict[str, bytes]:
    return {rel: (course / rel.format(nb=NB)).read_bytes() for rel in SCAFFOLDED}


def solution_notebook(course: Path) -> Path:
    return course / "solutions" / "week1" / f"{NB}.ipynb"


def submit(course: Path, student: Path, body: str) -> None:
    """A student's notebook: the copy's solution notebook with ITEM's body (SOLUTION) replaced by `body`."""
    text = solution_notebook(course).read_text()
    assert SOLUTION in text
    (student / "week1").mkdir(parents=True)
    (student / "week1" / f"{NB}.ipynb").write_text(text.replace(SOLUTION, body))


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory):
    """A copy of the course where `new` added ITEM (2 points) to NB, its solution was written and NB was built:
    (the copy, its files before `new`, what `new` printed, build's process)."""
    course = copy_course(tmp_path_factory.mktemp("course"))
    before = files(course)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # `new` reads and writes text only: it runs here, on the copy
        assert main(["--course", str(course / "course.yml"), "new", ITEM, "--notebook", NB, "--points", "2"]) == 0
    text = solution_notebook(course).read_text()
    assert PLACEHOLDER in text
    solution_notebook(course).write_text(text.replace(PLACEHOLDER, SOLUTION))
    built = run(course, "build", NB)  # imports the copy's exercise and hidden modules: in a process of its own
    return course, before, out.getvalue(), built


def test_new_writes_the_four_files_and_says_what_next(scaffolded):
    """Does `new` write the item into the four files (course.yml by one added line, its comments kept; the
    notebook's cells in course.yml's order; EXERCISES, HIDDEN_CASES and MISTAKES), so that the course's
    cross-check passes, and print the next steps ending with `build`?"""
    course, before, new, _ = scaffolded
    after = files(course)
    assert all(after[rel] != before[rel] for rel in SCAFFOLDED)
    old, yml = before["course.yml"].decode().splitlines(), after["course.yml"].decode().splitlines()
    added = [line for line in yml if line not in old]
    assert added == [f"          - {{id: {ITEM}, points: 2}}"] and len(yml) == len(old) + 1
    assert [line for line in yml if line.lstrip().startswith("#")] == [l for l in old if l.lstrip().startswith("#")]
    loaded = load_course(course / "course.yml")
    nb = loaded.notebook(NB)
    assert nb.items[-1].id == ITEM and nb.items[-1].points == 2
    check_course_files(loaded, root=course)  # solution cell, EXERCISES, HIDDEN_CASES: all there, in order

    import nbformat

    cells = nbformat.read(course / "solutions" / nb.path, as_version=4).cells
    graded = [c.metadata.nbgrader for c in cells if "nbgrader" in c.metadata]
    solutions = [g["grade_id"] for g in graded if g["solution"] and not g["grade_id"].startswith("reuse_")]
    assert solutions == [i.id for i in nb.items], "the notebook's items are in course.yml's order"
    assert graded[-1] == {"grade": True, "grade_id": f"test_{ITEM}", "locked": True, "points": 2.0,
                          "schema_version": 3, "solution": False, "task": False}
    assert "### BEGIN SOLUTION" in cells[-2].source and "### END SOLUTION" in cells[-2].source
    assert cells[-3].cell_type == "markdown" and f"`{ITEM}`" in cells[-3].source
    exercise = (course / SCAFFOLDED[2].format(nb=NB)).read_text()
    hidden = (course / SCAFFOLDED[3].format(nb=NB)).read_text()
    assert f'    Exercise("{ITEM}", run_{ITEM}, {ITEM}_public),\n]' in exercise
    assert f'    "{ITEM}": {ITEM}_hidden,\n}}' in hidden and f'    "{ITEM}": [\n' in hidden
    assert f"python -m autograder build {NB}" in new.splitlines()[-1]
    assert all(rel.format(nb=NB) in new for rel in SCAFFOLDED)
    if CONTRACT.is_file():  # the course contract lists every item: the new one under its notebook, once
        contract = (course / "docs" / "contract.md").read_text()
        section = contract.split(f"`{nb.path}`", 1)[1].split("\n#", 1)[0]
        assert contract.count(f"| `{ITEM}` |") == 1 and f"| `{ITEM}` | function | `{ITEM}(x) -> output` |" in section


def test_the_new_item_is_built_and_graded(scaffolded, tmp_path):
    """Once its solution is written, does `build` write the notebook's student version and public key with the
    item, and does `grade` give a right submission the item's points on its public and hidden case, and a
    wrong one 0?"""
    course, _, _, built = scaffolded
    assert built.returncode == 0, built.stderr
    assert f"wrote weeks/week1/{NB}.ipynb" in built.stdout and f"wrote autograder/public/{NB}.agw" in built.stdout
    public = wire.decode((course / "autograder" / "public" / f"{NB}.agw").read_bytes())
    assert [c["name"] for c in public[ITEM]["cases"]] == ["small-float64"]
    student = (course / "weeks" / "week1" / f"{NB}.ipynb").read_text()
    assert f"def {ITEM}(x):" in student and "BEGIN SOLUTION" not in student and SOLUTION not in student

    submitted = tmp_path / "submitted"
    submit(course, submitted / "right", SOLUTION)
    submit(course, submitted / "wrong", "return 3 * x")
    graded = run(course, "grade", str(submitted), "--out", str(tmp_path / "out"), "--no-pages", "--workers", "1")
    assert graded.returncode == 0, graded.stderr
    rows = gradebook_rows(tmp_path / "out")
    assert float(rows["right"][ITEM]) == 2 and float(rows["wrong"][ITEM]) == 0
    tests = results_of(tmp_path / "out", "right")
    assert tests[f"{ITEM}: small-float64"]["status"] == tests[f"{ITEM}: larger-float32"]["status"] == "passed"


def test_build_refuses_a_mistake_the_reference_makes_too(scaffolded):
    """When a catalogued mistake gives the reference's outputs on every case, does `build` exit 2 naming the
    hidden module, the item and that mistake (not one that differs), and write nothing?"""
    course, _, _, _ = scaffolded
    hidden = course / SCAFFOLDED[3].format(nb=NB)
    text = hidden.read_text()
    public = (course / "autograder" / "public" / f"{NB}.agw").read_bytes()
    mistakes = ('        Mistake("added_to_itself", "x is added to itself", "...", lambda x: x + x),\n'
                '        Mistake("tripled", "x is tripled", "multiply by 2", lambda x: 3 * x),\n')
    hidden.write_text(text.replace(f'    "{ITEM}": [\n', f'    "{ITEM}": [\n' + mistakes))
    try:
        res = run(course, "build", NB)
    finally:
        hidden.write_text(text)
    assert res.returncode == 2, res.stderr
    assert (f"autograder/hidden/{NB}.py: mistake 'added_to_itself' of item '{ITEM}' gives the reference's outputs "
            "on every case: the solution changed, or the mistake no longer differs; fix or remove it") in res.stderr
    assert "tripled" not in res.stderr and "Traceback" not in res.stderr
    assert (course / "autograder" / "public" / f"{NB}.agw").read_bytes() == public


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A copy of the course that `new` is only asked to refuse things in."""
    return copy_course(tmp_path_factory.mktemp("pristine"))


@pytest.mark.parametrize("args,phrases", [
    (["softmax", "--notebook", NB], ["course.yml: item 'softmax' already exists (in day03_attention_mechanism)"]),
    (["causal_mask", "--notebook", NB], ["item 'causal_mask' already exists (in " + NB]),
    ([ITEM, "--notebook", "day06_scaled_dot_product_atention"],
     ["course.yml: no notebook 'day06_scaled_dot_product_atention' (did you mean '" + NB + "'?)",
      "`new` adds an item to a notebook course.yml lists"]),
    (["2fast", "--notebook", NB], ["'2fast' is not a Python identifier"]),
    (["double-it", "--notebook", NB], ["'double-it' is not a Python identifier"]),
    (["class", "--notebook", NB], ["'class' is not a Python identifier"]),
    (["test_double_it", "--notebook", NB], ["starts with test_"]),
], ids=["taken-elsewhere", "taken-here", "unknown-notebook", "digit-first", "dash", "keyword", "reserved-prefix"])
def test_new_refuses_with_exit_2_and_writes_nothing(pristine, capsys, args, phrases):
    """Is an existing item id, an unknown notebook (with the id probably meant) or an id that is not a Python
    name refused with exit 2 and a message naming the problem, leaving every file as it was?"""
    before = files(pristine)
    assert main(["--course", str(pristine / "course.yml"), "new", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, err
    assert files(pristine) == before


def test_new_refuses_a_file_it_cannot_edit(pristine):
    """Does `new` refuse, naming the file and what to do, when a notebook's EXERCISES is not a literal list, and
    when HIDDEN_CASES already has an entry for the item, leaving all four files as they were?"""
    course = load_course(pristine / "course.yml")
    before = files(pristine)
    exercise = pristine / SCAFFOLDED[2].format(nb=NB)
    hidden = pristine / SCAFFOLDED[3].format(nb=NB)
    text, hidden_text = exercise.read_text(), hidden.read_text()
    try:
        exercise.write_text(text.replace("EXERCISES = [", "EXERCISES = list([", 1).rstrip()[:-1] + "])\n")
        with pytest.raises(scaffold.ScaffoldError, match=f"autograder/exercises/{NB}.py: EXERCISES is not written "
                           r"as a list \[\.\.\.\]; add Exercise\(\"double_it\""):
            scaffold.new_item(course, ITEM, NB)
        exercise.write_text(text)
        hidden.write_text(hidden_text.replace("HIDDEN_CASES = {", f'HIDDEN_CASES = {{\n    "{ITEM}": None,', 1))
        with pytest.raises(scaffold.ScaffoldError, match="HIDDEN_CASES already has an entry for 'double_it'"):
            scaffold.new_item(course, ITEM, NB)
    finally:
        exercise.write_text(text)
        hidden.write_text(hidden_text)
    assert files(pristine) == before


def test_text_edits_keep_the_files_layout():
    """Does course.yml get the item after a block-style last item with a comment after it, and does an
    exercise module whose list closes on its last line, without the helpers imported, get them?"""
    yml = ("weeks:\n  - id: w\n    notebooks:\n      - id: nb\n        items:\n          - id: a\n"
           "            points: 1  # the first\n  # a comment\n")
    assert scaffold.course_yml_text(yml, "nb", "b", 2.5, "course.yml") == yml.replace(
        "# the first\n", "# the first\n          - {id: b, points: 2.5}\n")
    module = ("from ..exercise import Exercise, StudentError\n\n\ndef run(fn, inputs):\n    return {}\n\n\n"
              "EXERCISES = [Exercise(\"a\", run, lambda rng: [])]\n")
    out = scaffold.exercise_text(module, "b", "m.py")
    assert out.startswith("from ..exercise import Case, Exercise, StudentError\n")
    assert out.endswith('EXERCISES = [Exercise("a", run, lambda rng: []),\n    Exercise("b", run_b, b_public),\n]\n')
    assert 'return {"output": fn(inputs["x"])}' in out  # no as_tensor imported: a NumPy notebook's runner
    compile(out, "m.py", "exec")
