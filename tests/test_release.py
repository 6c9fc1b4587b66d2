"""The student release: what it holds, what it must never hold, and that it works on its own."""
from __future__ import annotations

import json
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
from autograder.release import (
    INSTRUCTOR_ONLY, STUDENT_MODULES, TORCH_CPU_INDEX, ReleaseError, check_built, project_pins, release,
)

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
    for instructor_only in ("nbgrader", "sqlalchemy", "alembic", "mako", "rapidfuzz", "pytest", "jupytext"):
        assert instructor_only not in pins, f"{instructor_only} is not for students"
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
        hidden_source = "\n".join(path.read_text() for path in  # with the hidden libraries it imports
                                   reference.hidden_files(ROOT / "autograder" / "hidden" / f"{nb.id}.py"))
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


def oldest_python() -> str:
    """Debian 12's python3.11 (3.11.2, the oldest Python supported) when this machine has it, else this one."""
    debian = "/usr/bin/python3.11"
    if Path(debian).exists():
        probe = subprocess.run([debian, "-c", "import ensurepip, sys; print('%d.%d.%d' % sys.version_info[:3])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip().startswith("3.11."):
            return debian
    return sys.executable


def test_release_installs_and_checks_in_a_fresh_venv(released):
    """In a new virtual environment with only the release's requirements, on the oldest supported Python the
    machine has (Debian 12's 3.11.2), do the workflow's checks fail stubs and pass solutions?

    The venv is made the way the README says (`python3.11 -m venv`, `pip install -r
    requirements.txt`); pip takes torch from this machine's wheel cache and the
    rest from the package indexes it is configured with.
    """
    sys.path.insert(0, str(ROOT / "demo"))
    import students as demo

    # In memory when the machine has a tmpfs: a gigabyte of torch is written and removed in seconds.
    scratch = Path(tempfile.mkdtemp(prefix="fresh-venv-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
    try:
        _install_and_check(released, scratch / "venv", demo)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


FRESH_VENV_NOTEBOOKS = (BUILT[0], BUILT[-1])
"""The notebooks checked in the fresh venv: the first and the last (the most packages); the others' checks
are the same command, run in the project's venv by test_check."""


def _install_and_check(released: Path, venv: Path, demo) -> None:
    started = time.monotonic()
    python = oldest_python()
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    print(f"venv made with {python}")
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
    assert set(commands) == {nb.id for nb in BUILT}
    for nb in FRESH_VENV_NOTEBOOKS:
        k = BUILT.index(nb)
        stub = subprocess.run(commands[nb.id], shell=True, cwd=released, env=env, capture_output=True, text=True)
        assert stub.returncode == 1 and "FAIL" in stub.stdout, stub.stdout[-1500:] + stub.stderr[-1500:]
        # The notebook solved, and the earlier ones too: its `from autograder.earlier import` reads the student's own.
        originals = {n: (released / "weeks" / n.path).read_bytes() for n in BUILT[:k + 1]}
        for n in originals:
            nbformat.write(demo.make_notebook(n, {"*": "solution"}), released / "weeks" / n.path)
        try:
            done = subprocess.run(commands[nb.id], shell=True, cwd=released, env=env, capture_output=True, text=True)
        finally:
            for n, original in originals.items():
                (released / "weeks" / n.path).write_bytes(original)
        assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
        assert re.search(r"\b(\d+)/\1 items pass", done.stdout) and "FAIL" not in done.stdout, done.stdout[-1500:]


TRACE = """import json, sys
from autograder.__main__ import main
code = main(sys.argv[1:])
print("LOADED " + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "autograder")))
sys.exit(code)
"""


def test_release_ships_only_what_check_needs_and_offers_only_check(released, tmp_path):
    """With only the release's own files on PYTHONPATH, does `--help` list `check` alone, do instructor commands
    exit 2 with a message (no ModuleNotFoundError), does `check` work, and does the release ship exactly the
    modules `check` loads (no grade reports, class report, review, authoring or LMS tools)?"""
    sys.path.insert(0, str(ROOT / "demo"))
    import students as demo

    shipped = {p.name for p in (released / "autograder").glob("*.py")}
    assert shipped == set(STUDENT_MODULES)
    for absent in ("classreport.py", "report.py", "pictures.py", "review.py", "build.py", "source.py",
                   "crosscheck.py", "lms.py", "policy.py", "release.py", "gradescope.py", "hidden_tests.py"):
        assert not (released / "autograder" / absent).exists(), f"{absent} ships to students"
    # -S: no .pth files, so not the project's own editable install, whose finder would quietly supply from
    # this repository any module the release lacks; the installed libraries come after the release's files.
    import sysconfig

    libraries = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONPATH=os.pathsep.join([str(released), *libraries]), MPLBACKEND="Agg")

    def run(*args, cwd=released):
        proc = subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=600)
        assert "Traceback" not in proc.stdout + proc.stderr and "ModuleNotFoundError" not in proc.stderr, (
            proc.stdout[-2000:] + proc.stderr[-2000:])
        return proc

    where = run("-c", "import autograder; print(autograder.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).resolve() == (released / "autograder" / "__init__.py").resolve()
    helped = run("-m", "autograder", "--help")
    assert helped.returncode == 0 and "check" in helped.stdout
    for command in ("build", "normalize", "grade", "report", "summary", "release", "gradescope", "import",
                    "manual", "finalize", "review", "new"):
        assert not re.search(rf"\b{command}\b", helped.stdout), f"--help offers {command}"
    for args in (["build"], ["import", "nbgrader", "x.zip", "--into", "submitted"], ["grade", "s", "--out", "o"]):
        refused = run("-m", "autograder", *args)
        assert refused.returncode == 2 and "check" in refused.stderr and "not a command" in refused.stderr, args
    (tmp_path / "trace.py").write_text(TRACE)
    nb = next(n for n in BUILT if n.id == "day06_scaled_dot_product_attention") if any(
        n.id == "day06_scaled_dot_product_attention" for n in BUILT) else BUILT[0]
    stub = run(str(tmp_path / "trace.py"), "check", f"weeks/{nb.path}")
    assert stub.returncode == 1 and "FAIL" in stub.stdout, stub.stdout[-1500:] + stub.stderr[-1500:]
    loaded = {m.split(".")[1] + ".py" for m in json.loads(stub.stdout.split("LOADED ", 1)[1]) if m.count(".") == 1}
    loaded.add("__init__.py")
    assert loaded <= set(STUDENT_MODULES), f"check loads modules the release lacks: {loaded - set(STUDENT_MODULES)}"
    # The notebooks import earlier.py themselves (`from autograder.earlier import ...`), in the kernel or the sandbox.
    imported = {"earlier.py"} if any("from autograder.earlier import" in (released / "weeks" / n.path).read_text()
                                     for n in BUILT) else set()
    assert set(STUDENT_MODULES) <= loaded | imported, (
        f"the release ships modules neither check nor the notebooks load: {set(STUDENT_MODULES) - loaded - imported}")
    solved = tmp_path / "solved" / nb.week / f"{nb.id}.ipynb"
    solved.parent.mkdir(parents=True)
    nbformat.write(demo.make_notebook(nb, {"*": "solution"}), solved)
    done = run("-m", "autograder", "check", str(solved))
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    assert re.search(r"\b(\d+)/\1 items pass", done.stdout) and "FAIL" not in done.stdout, done.stdout[-1500:]
    # the in-notebook check: `from autograder import check`, on a wrong function
    quick = run("-c", "from autograder import check\n"
                      "def causal_mask(size, device=None):\n    import torch\n    return torch.ones(size, size, dtype=torch.bool)\n"
                      "try:\n    check(causal_mask)\nexcept AssertionError as e:\n    print(e)\n")
    assert "FAIL causal_mask" in quick.stdout, quick.stdout + quick.stderr


def test_student_readme_explains_the_cpu_build_of_torch(released):
    """Does the student README show how to install torch's CPU build from PyTorch's CPU index, and state the Python
    versions, while requirements.txt names no extra index (the default index alone must do)?"""
    readme = (released / "README.md").read_text()
    torch = project_pins()["torch"]
    assert torch.startswith("torch==") and TORCH_CPU_INDEX == "https://download.pytorch.org/whl/cpu"
    assert f".venv/bin/python -m pip install {torch} --index-url {TORCH_CPU_INDEX}" in readme
    assert readme.index(f"--index-url {TORCH_CPU_INDEX}") < readme.rindex("-m pip install -r requirements.txt")
    assert "3.11.2" in readme
    requirements = (released / "requirements.txt").read_text()
    assert "index-url" not in requirements and "download.pytorch.org" not in requirements
    assert torch in requirements.splitlines()
    assert 'requires-python = ">=3.11.2,<3.12"' in (released / "pyproject.toml").read_text()
