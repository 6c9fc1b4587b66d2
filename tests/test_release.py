"""The student release: what it holds, what it must never hold, and that it works on its own."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from autograder import reference, wire
from autograder.config import ROOT, ConfigError, load_course
from autograder.release import INSTRUCTOR_ONLY, ReleaseError, check_built, release

COURSE = load_course()


def _releasable(nb) -> bool:
    try:
        check_built(COURSE, [nb])
        return True
    except ReleaseError:
        return False  # not written yet, or stale: tests/test_build.py reports that


BUILT = [nb for nb in COURSE.notebooks if _releasable(nb)]
SOLUTION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
HIDDEN_TESTS = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


def readable_tmpdir(prefix: str) -> Path:
    """A temporary folder for code the sandbox must see: under build/ (git-ignored), not /tmp.

    As root the sandbox gets a private, empty /tmp and runs as `nobody`, so a
    venv or a course under /tmp would be invisible to it, and one under a
    folder closed to others unreadable.
    """
    (ROOT / "build").mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=ROOT / "build"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def released():
    """The whole course, released once for this module."""
    out = readable_tmpdir("attention-release-") / "student-repo"
    release(COURSE, out, None if len(BUILT) == len(COURSE.notebooks) else [nb.id for nb in BUILT], log=lambda *a: None)
    yield out
    shutil.rmtree(out.parent, ignore_errors=True)


def text_files(root: Path):
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix != ".agw":
            yield path, path.read_text(encoding="utf-8")


def test_release_holds_what_students_need(released):
    """Are the notebooks, the runtime, the public keys, a README with the two commands and pinned requirements all there?"""
    for nb in BUILT:
        assert (released / "weeks" / nb.path).read_bytes() == (ROOT / "weeks" / nb.path).read_bytes()
        assert (released / "autograder" / "public" / f"{nb.id}.agw").exists()
        assert (released / "autograder" / "exercises" / f"{nb.id}.py").exists()
    for module in ("__init__.py", "__main__.py", "check.py", "compare.py", "sandbox.py", "wire.py", "worker.py"):
        assert (released / "autograder" / module).exists(), module
    readme = (released / "README.md").read_text()
    assert "-m pip install -r requirements.txt" in readme
    assert f"-m autograder check weeks/{BUILT[0].path}" in readme
    assert all(f"weeks/{nb.path}" in readme for nb in BUILT)
    assert "$" not in readme.replace("$$", ""), "an unfilled template placeholder"
    student_course = load_course(released / "course.yml")
    assert [nb.id for nb in student_course.notebooks] == [nb.id for nb in BUILT]
    assert student_course.grading.hidden_seed == 0
    assert [nb.items for nb in student_course.notebooks] == [nb.items for nb in BUILT]


def test_requirements_are_the_projects_pins(released):
    """Is every package pinned, at the very version requirements.txt gives the project, plus the checker itself?"""
    def canon(line):
        name, _, version = line.partition("==")
        return re.sub(r"[-_.]+", "-", name).lower(), version

    project = dict(canon(l) for l in (ROOT / "requirements.txt").read_text().split() if "==" in l)
    lines = (released / "requirements.txt").read_text().splitlines()
    assert lines[-1] == "-e ."
    pins = dict(canon(l) for l in lines[:-1])
    assert {"torch", "numpy", "nbformat", "pyyaml", "ipykernel", "jupyterlab"} <= set(pins)
    assert "nbgrader" not in pins and "pytest" not in pins and "jupytext" not in pins
    for name, version in pins.items():
        assert project.get(name) == version, f"{name}=={version} is not the project's pin ({project.get(name)})"


def test_release_leaks_nothing(released, keys):
    """Does the release hold no solution, hidden case, known-mistake code, quiz answer or hidden seed?"""
    files = [p.relative_to(released) for p in released.rglob("*") if p.is_file()]
    for rel in files:
        assert not set(rel.parts) & INSTRUCTOR_ONLY, f"{rel} is instructor-only"
        assert rel.parts[0] not in ("solutions", ".cache", "submitted", "tests", "demo"), rel
    texts = dict(text_files(released))
    everything = "\n".join(texts.values())
    for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "hidden_tests", "check_all("):
        assert marker not in everything, f"{marker!r} is in the release"
    seed = COURSE.grading.hidden_seed
    assert not re.search(rf"\b{seed}\b", everything), "the hidden seed is in the release"
    for nb in BUILT:
        source = (ROOT / "solutions" / nb.path).read_text()
        student = (ROOT / "weeks" / nb.path).read_text()
        solution_cells = [c.source for c in nbformat.read(ROOT / "solutions" / nb.path, as_version=4).cells]
        secret_lines = {line.strip() for cell in solution_cells for block in SOLUTION.findall(cell)
                        for line in block.splitlines()}
        secret_lines |= {line.strip() for block in HIDDEN_TESTS.findall(source) for line in block.splitlines()}
        hidden_source = (ROOT / "autograder" / "hidden" / f"{nb.id}.py").read_text()
        public_source = "\n".join([p.read_text() for p in (ROOT / "autograder" / "exercises").glob("*.py")]
                                  + [(ROOT / "weeks" / other.path).read_text() for other in BUILT])
        secret_lines |= {line.strip() for line in hidden_source.splitlines()}
        # Lines the course itself publishes (the notebook, the public exercise modules) are not secrets.
        secret_lines = {line for line in secret_lines
                        if len(line) >= 20 and line not in student and line not in public_source}
        for path, text in texts.items():
            for line in secret_lines:
                assert line not in text, f"{path.relative_to(released)} holds {line!r} from the instructor's side"
        public = wire.decode((released / "autograder" / "public" / f"{nb.id}.agw").read_bytes())
        for item_id, item in keys[nb.id].items():
            hidden_names = {c["name"] for c in item["cases"] if not c["public"]}
            shipped = public[item_id]["cases"]
            if item["kind"] == "quiz":
                assert all(c["expected"] is None and not c["mistakes"] for c in shipped), f"{item_id}'s answer ships"
            else:
                assert all(c["public"] for c in shipped) and not hidden_names & {c["name"] for c in shipped}
                named_in_public = {n for n in hidden_names if f'"{n}"' in public_source}  # another item's public case
                assert not any(f'"{name}"' in everything for name in hidden_names - named_in_public), (
                    f"a hidden case of {item_id} is named in the release")


def test_release_refuses_stale_notebooks_and_unsafe_folders(tmp_path):
    """Does release stop, saying what to run, when weeks/ is older than solutions/, and never write over the course?"""
    nb = BUILT[0]
    fake = tmp_path / "course"
    (fake / "solutions" / nb.week).mkdir(parents=True)
    (fake / "weeks" / nb.week).mkdir(parents=True)
    shutil.copy(ROOT / "solutions" / nb.path, fake / "solutions" / nb.path)
    stale = nbformat.read(ROOT / "weeks" / nb.path, as_version=4)
    stale.cells[0].source += "\nan old sentence"
    nbformat.write(stale, fake / "weeks" / nb.path)
    with pytest.raises(ReleaseError, match=rf"weeks/{nb.path}.*python -m autograder build {nb.id}"):
        check_built(COURSE, [nb], fake)
    with pytest.raises(ReleaseError, match="overwrite the course"):
        release(COURSE, ROOT, [nb.id], log=lambda *a: None)
    with pytest.raises(ReleaseError, match="inside the course's weeks"):
        release(COURSE, ROOT / "weeks" / "x", [nb.id], log=lambda *a: None)
    with pytest.raises(ConfigError, match="did you mean"):
        release(COURSE, tmp_path / "out", [nb.id[:-1]], log=lambda *a: None)


def test_releasing_again_keeps_earlier_notebooks(tmp_path):
    """After releasing one notebook and then another into the same folder, are both released and listed?"""
    if len(BUILT) < 2:
        pytest.skip("needs two built notebooks")
    first, second = BUILT[0], BUILT[-1]
    out = tmp_path / "repo"
    release(COURSE, out, [first.id], log=lambda *a: None)
    assert not (out / "weeks" / second.path).exists()
    assert not (out / "autograder" / "public" / f"{second.id}.agw").exists()
    release(COURSE, out, [second.id], log=lambda *a: None)
    assert (out / "weeks" / first.path).exists() and (out / "weeks" / second.path).exists()
    assert [nb.id for nb in load_course(out / "course.yml").notebooks] == [first.id, second.id]
    workflow = yaml.safe_load((out / ".github" / "workflows" / "classroom.yml").read_text())
    assert {s.get("id") for s in workflow["jobs"]["run-autograding-tests"]["steps"]} >= {first.id, second.id}


def test_classroom_workflow_runs_the_public_checks(released):
    """Does the workflow run on push, check each notebook with a classroom-resources grader step and report them all?"""
    workflow = yaml.safe_load((released / ".github" / "workflows" / "classroom.yml").read_text())
    assert "push" in workflow["on"]
    assert workflow["permissions"]["checks"] == "write"
    job = workflow["jobs"]["run-autograding-tests"]
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert "actions/checkout@v4" in uses
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["python-version"] == "3.11"
    assert any("-r requirements.txt" in s.get("run", "") for s in steps)
    graders = [s for s in steps if s.get("uses") == "classroom-resources/autograding-command-grader@v1"]
    assert [s["id"] for s in graders] == [nb.id for nb in BUILT]
    for step, nb in zip(graders, BUILT):
        assert step["with"]["command"] == f"python -m autograder check weeks/{nb.path}"
        assert (released / "weeks" / nb.path).exists()
        assert step["with"]["max-score"] > 0 and step["with"]["timeout"] > 0
    reporter = steps[-1]
    assert reporter["uses"] == "classroom-resources/autograding-grading-reporter@v1"
    assert reporter["with"]["runners"].split(",") == [nb.id for nb in BUILT]
    for nb in BUILT:
        assert reporter["env"][f"{nb.id.upper()}_RESULTS"] == f"${{{{steps.{nb.id}.outputs.result}}}}"


def test_release_installs_and_checks_in_a_fresh_venv(released):
    """In a new virtual environment with only the release's requirements, do the workflow's checks fail stubs and pass solutions?

    The venv is made the way the README says (`python -m venv`, `pip install -r
    requirements.txt`); pip takes torch from this machine's wheel cache and the
    rest from the package indexes it is configured with.
    """
    sys.path.insert(0, str(ROOT / "demo"))
    import students as demo

    venv = released.parent / "venv"
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", "requirements.txt"], cwd=released,
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    print(f"fresh venv installed in {time.monotonic() - started:.0f} s")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    # Jupyter starts kernels in the notebook's folder: the checker must import from there, from the release.
    where = subprocess.run(["python", "-c", "import autograder; print(autograder.__file__)"],
                           cwd=released / "weeks" / BUILT[0].week, env=env, capture_output=True, text=True)
    assert Path(where.stdout.strip()).resolve() == (released / "autograder" / "__init__.py").resolve(), where.stderr
    workflow = yaml.safe_load((released / ".github" / "workflows" / "classroom.yml").read_text())
    commands = {s["id"]: s["with"]["command"] for s in workflow["jobs"]["run-autograding-tests"]["steps"]
                if s.get("uses", "").endswith("autograding-command-grader@v1")}
    for nb in BUILT:
        stub = subprocess.run(commands[nb.id], shell=True, cwd=released, env=env, capture_output=True, text=True)
        assert stub.returncode == 1 and "FAIL" in stub.stdout, stub.stdout[-1500:] + stub.stderr[-1500:]
        target = released / "weeks" / nb.path
        original = target.read_bytes()
        nbformat.write(demo.make_notebook(nb, {"*": "solution"}), target)
        try:
            done = subprocess.run(commands[nb.id], shell=True, cwd=released, env=env, capture_output=True, text=True)
        finally:
            target.write_bytes(original)
        assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
        assert f"{len(nb.auto_items)}/{len(nb.auto_items)} items pass" in done.stdout
