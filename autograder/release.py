"""The student release: `python -m autograder release OUT [NOTEBOOK or WEEK ...]`.

OUT becomes the students' repository (a GitHub Classroom template, or a
folder to zip):

    weeks/<week>/<notebook>.ipynb   the student notebooks, as built (stale ones are refused)
    autograder/                     the runtime students need for `check`: public exercise
                                    modules and public keys (public cases with their expected
                                    outputs, as data) of the released notebooks only; and
                                    `autograder.earlier`, which brings earlier notebooks' code
                                    into later ones
    autograder/published/           only once published (`--publish-references WEEK`, after the
                                    week's due date): the reference functions and classes of
                                    those notebooks, for `earlier.use("reference")`
    course.yml                      the released weeks and notebooks; the hidden seed is not in it
    requirements.txt                pinned versions (the project's own) and `-e .`
    pyproject.toml                  makes `autograder` importable from any folder (editable install)
    README.md                       the two commands students need
    .github/workflows/classroom.yml GitHub Classroom: the public checks on every push

Never in it: solutions/, autograder/hidden/, the answer-key cache, the
instructor's tools (build, release, Gradescope, LMS imports, late policy,
reports) and the module that runs hidden tests: of autograder/, only the
modules `check` imports ship (STUDENT_MODULES), and its command line then
offers `check` alone. Releasing again into the same OUT adds or
refreshes notebooks and keeps those released before (a week at a time),
and keeps the references published before.
"""
from __future__ import annotations

import importlib.metadata
import shutil
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from .config import ROOT, ConfigError, Course, Notebook, _did_you_mean

TEMPLATES = Path(__file__).resolve().parent / "templates"

STUDENT_MODULES = frozenset({
    "__init__.py", "__main__.py", "check.py",  # `from autograder import check`, `python -m autograder check`
    "demo.py",                                 # `from autograder import demo`: demos that wait for a stub
    "config.py", "compare.py", "exercise.py",  # course.yml, judging a case, how an exercise is called
    "reference.py",                            # load_public: the public key shipped as data
    "grade.py", "gradebook.py", "notebook.py",  # the grader's own pipeline, so `check` runs a notebook as `grade` does
    "worker.py", "sandbox.py", "jail.py", "wire.py",  # the sandbox the notebook runs in, and what crosses back
    "earlier.py",                              # `from autograder.earlier import ...`: earlier notebooks' code
})
"""The modules of autograder/ that ship to students: what `check` imports, and nothing else.

`tests/test_release.py` runs `check` in a release and compares this list with the modules it
loaded (and the notebooks' own import line, for earlier.py). A module not listed here (a new one
included) stays with the instructor."""

STUDENT_FOLDERS = frozenset({"exercises", "public"})
"""Folders of autograder/ that ship, with the files of the released notebooks only."""

INSTRUCTOR_ONLY = frozenset({
    "hidden", "hidden_tests.py",            # hidden cases, known mistakes as code, the hidden-test runner
    "build.py", "source.py", "crosscheck.py", "scaffold.py",  # authoring (build needs nbgrader)
    "release.py", "gradescope.py", "lms.py", "policy.py", "review.py", "templates",  # the instructor's tools
    "classreport.py", "report.py", "pictures.py",  # feedback pages and the class report
    "__pycache__",
})
"""Names under autograder/ that never ship to students (anything outside STUDENT_MODULES and
STUDENT_FOLDERS stays out as well; these are the ones that must never be added to them)."""

STUDENT_PACKAGES = ("torch", "numpy", "matplotlib", "ipython", "ipykernel", "nbformat", "PyYAML",
                    "jupyterlab", "notebook")
"""What students install (with everything these need): the runtime of `check` and Jupyter."""

GRADING_PACKAGES = ("torch", "numpy", "matplotlib", "ipython", "nbformat", "PyYAML")
"""What grading needs (the Gradescope image): the runtime, without Jupyter."""

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
"""Where CI and Gradescope get the CPU build of torch (small, no CUDA)."""


class ReleaseError(Exception):
    """The release cannot be written as asked (stale build, unknown notebook, unsafe folder)."""


@dataclass
class ReleaseSummary:
    out: Path
    notebooks: list[Notebook] = field(default_factory=list)
    files: int = 0
    bytes: int = 0


def select(course: Course, names: list[str] | None) -> list[Notebook]:
    """The notebooks named by id or by week id, in course order (all when `names` is empty)."""
    if not names:
        return list(course.notebooks)
    weeks = {w.id: w for w in course.weeks}
    wanted: set[str] = set()
    for name in names:
        if name in weeks:
            wanted.update(nb.id for nb in weeks[name].notebooks)
        else:
            choices = [nb.id for nb in course.notebooks] + list(weeks)
            if name not in choices:
                raise ConfigError(f"unknown notebook or week {name!r}{_did_you_mean(name, choices)}")
            wanted.add(name)
    return [nb for nb in course.notebooks if nb.id in wanted]


def project_pins(root: Path = ROOT) -> dict[str, str]:
    """{canonical name: `Name==version`}: the pins of the project's requirements.txt."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (root / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name.strip())] = f"{name.strip()}=={version.strip()}"
    return pins


def pinned_requirements(packages=STUDENT_PACKAGES, root: Path = ROOT) -> list[str]:
    """`name==version` for `packages` and everything they need, at the versions requirements.txt pins.

    What they need is read from the installed distributions' metadata; the versions are the
    project's own pins, so students, CI, Gradescope and the instructor run the same code.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = project_pins(root)
    pins: dict[str, str] = {}
    todo = [(name, ()) for name in packages]
    done: set[tuple[str, str]] = set()
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key not in project:
            raise ReleaseError(f"{name} is needed (by {', '.join(packages)}) but requirements.txt does not pin it")
        pins[key] = project[key]
        dist = importlib.metadata.distribution(name)
        for extra in ("",) + tuple(extras):
            if (key, extra) in done:
                continue
            done.add((key, extra))
            for spec in dist.requires or []:
                req = Requirement(spec)
                if req.marker is None and extra == "" or (
                        req.marker is not None and req.marker.evaluate({"extra": extra})
                        and (extra == "" or "extra" in str(req.marker))):
                    todo.append((req.name, tuple(req.extras)))
    return [pins[key] for key in sorted(pins)]


def check_built(course: Course, notebooks: list[Notebook], root: Path = ROOT) -> None:
    """Refuse to release a notebook whose weeks/ file or public key is missing or stale."""
    from . import build, reference

    problems = []
    for nb in notebooks:
        path = root / "weeks" / nb.path
        if not (root / "solutions" / nb.path).exists():
            problems.append(f"solutions/{nb.path}: missing (is {nb.id} written yet?)")
        elif not path.exists() or path.read_text(encoding="utf-8") != build.release_text(nb, root):
            problems.append(f"weeks/{nb.path}: missing or older than solutions/; run python -m autograder build {nb.id}")
        if not reference.public_path(nb.id).exists():
            problems.append(f"{reference.public_path(nb.id)}: missing; run python -m autograder build {nb.id}")
    if problems:
        raise ReleaseError("cannot release:\n  " + "\n  ".join(problems))


def student_course_yaml(course: Course, notebooks: list[Notebook]) -> str:
    """course.yml for students: the released notebooks only, and no hidden seed."""
    data = yaml.safe_load(course.source.read_text(encoding="utf-8"))
    ids = {nb.id for nb in notebooks}
    weeks = []
    for week in data["weeks"]:
        kept = [nb for nb in week["notebooks"] if nb["id"] in ids]
        if kept:
            weeks.append(dict(week, notebooks=kept))
    data["weeks"] = weeks
    data["grading"]["hidden_seed"] = 0
    head = ("# The course as released to students (written by `python -m autograder release`).\n"
            "# `check` reads it; the instructor's hidden seed is not part of the release (hidden_seed: 0).\n")
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def _render(template: str, **values) -> str:
    return string.Template((TEMPLATES / template).read_text(encoding="utf-8")).substitute(values)


def classroom_workflow(course: Course, notebooks: list[Notebook]) -> str:
    """The GitHub Classroom workflow: one command-grader step per notebook, then the reporter."""
    steps, env, runners = [], [], []
    for nb in notebooks:
        steps.append(
            f"      - name: {nb.id}\n"
            f"        id: {nb.id}\n"
            f"        uses: classroom-resources/autograding-command-grader@v1\n"
            f"        with:\n"
            f"          test-name: {_yaml_str(nb.title + ' (public checks)')}\n"
            f"          command: python -m autograder check weeks/{nb.path}\n"
            f"          timeout: 10\n"
            f"          max-score: 1\n"
        )
        env.append(f"          {nb.id.upper()}_RESULTS: \"${{{{steps.{nb.id}.outputs.result}}}}\"\n")
        runners.append(nb.id)
    return _render("classroom.yml", torch_index=TORCH_CPU_INDEX, steps="".join(steps).rstrip("\n"),
                   env="".join(env).rstrip("\n"), runners=",".join(runners))


def _yaml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def student_readme(course: Course, notebooks: list[Notebook], published: list[Notebook] = ()) -> str:
    rows = "\n".join(f"| {nb.week} | `weeks/{nb.path}` | {nb.title} |" for nb in notebooks)
    if published:
        note = ("Published so far: the references of " + ", ".join(f"{nb.title.split(':')[0]} (`{nb.id}`)"
                                                                 for nb in published) + ".")
    else:
        note = "No references are published yet."
    first = notebooks[0].path if notebooks else "week1/<notebook>.ipynb"
    from packaging.utils import canonicalize_name

    torch = project_pins().get(canonicalize_name("torch"), "torch")
    return _render("student_README.md", course_name=course.name, notebook_rows=rows, first_notebook=first,
                   torch_pin=torch, torch_index=TORCH_CPU_INDEX, published_note=note)


def pyproject() -> str:
    return _render("student_pyproject.toml")


def _copy_runtime(dest: Path, notebooks: list[Notebook], root: Path) -> None:
    """autograder/ without the instructor's parts; exercise modules and public keys of `notebooks` only."""
    src = root / "autograder"
    ids = {nb.id for nb in notebooks}
    if dest.exists():
        shutil.rmtree(dest)
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_dir() or any(part in INSTRUCTOR_ONLY for part in rel.parts) or path.suffix == ".pyc":
            continue
        if (rel.parts[0] not in STUDENT_FOLDERS if len(rel.parts) > 1 else rel.name not in STUDENT_MODULES):
            continue
        if rel.parts[0] in ("exercises", "public") and len(rel.parts) == 2 and path.stem != "__init__":
            if path.stem not in ids:
                continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def _safe_out(out: Path, root: Path) -> Path:
    out = out.resolve()
    root = root.resolve()
    if out == root or root.is_relative_to(out):
        raise ReleaseError(f"{out}: the release would overwrite the course itself; choose another folder")
    for inner in ("solutions", "weeks", "autograder", "demo", "tests"):
        if out.is_relative_to(root / inner):
            raise ReleaseError(f"{out}: inside the course's {inner}/; choose a folder outside it")
    return out


def publishable(course: Course, notebooks: list[Notebook], now: datetime | None = None) -> list[str]:
    """Refuse to publish references before their week's due date (and grace period); warn of late work still open.

    Returns the warnings: weeks whose late work still scores points, whose students could
    read the references before handing in.
    """
    now = now or datetime.now(timezone.utc)
    weeks = {nb.id: week for week in course.weeks for nb in week.notebooks}
    problems, warnings = [], []
    for nb in notebooks:
        week = weeks[nb.id]
        if week.due is None:
            continue
        grace = timedelta(minutes=course.late.grace_minutes)
        if now < week.due + grace:
            problems.append(f"{nb.id}: {week.id} is due {week.due.isoformat()} (plus {course.late.grace_minutes:g} "
                            "minutes' grace); publish its references after that")
        elif not course.late.zero_after_days:
            warnings.append(f"late work for {week.id} scores points however late (course.yml's late policy): "
                            "students who have not handed it in yet can read its references")
        elif now < week.due + grace + timedelta(days=course.late.zero_after_days):
            until = (week.due + grace + timedelta(days=course.late.zero_after_days)).isoformat()
            warnings.append(f"late work for {week.id} still scores points until {until} (course.yml's late "
                            "policy): students who have not handed it in yet can read its references")
    if problems:
        raise ReleaseError("cannot publish these references yet:\n  " + "\n  ".join(problems))
    return list(dict.fromkeys(warnings))


def _publish(course: Course, out: Path, ids: set[str], root: Path) -> list[Notebook]:
    """Write autograder/published/<notebook>.py, the reference functions and classes of each notebook in `ids`."""
    from .earlier import reference_pieces

    published = [nb for nb in course.notebooks if nb.id in ids and (root / "solutions" / nb.path).exists()]
    folder = out / "autograder" / "published"
    for nb in published:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{nb.id}.py").write_text(reference_pieces(nb, root)["source"], encoding="utf-8")
    return published


def release(course: Course, out: Path, names: list[str] | None = None, root: Path = ROOT, log=print,
            publish: list[str] | None = None, now: datetime | None = None) -> ReleaseSummary:
    """Write (or refresh) the student repository in OUT; `publish`: weeks or notebooks whose references to publish.

    With `publish` and no `names`, the notebooks already in OUT are refreshed and nothing new is released.
    """
    out = _safe_out(Path(out), root)
    if publish and not names:
        asked = [nb for nb in course.notebooks if (out / "weeks" / nb.path).exists()]
        if not asked:
            raise ReleaseError(f"{out} holds no release yet: release the notebooks first "
                               "(python -m autograder release OUT week1), then publish references")
    else:
        asked = select(course, names)
    check_built(course, asked, root)
    to_publish = select(course, publish) if publish else []
    for warning in publishable(course, to_publish, now):
        log(f"warning: {warning}")
    # Notebooks released earlier into OUT stay released (and keep their runtime files), and references published
    # earlier stay published.
    earlier = [nb for nb in course.notebooks if (out / "weeks" / nb.path).exists() and nb not in asked]
    if earlier:
        check_built(course, earlier, root)
    notebooks = [nb for nb in course.notebooks if nb in asked or nb in earlier]
    kept = {path.stem for path in (out / "autograder" / "published").glob("*.py")}
    out.mkdir(parents=True, exist_ok=True)
    for nb in notebooks:
        target = out / "weeks" / nb.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / "weeks" / nb.path, target)
    _copy_runtime(out / "autograder", notebooks, root)
    published = _publish(course, out, kept | {nb.id for nb in to_publish}, root)
    if to_publish:
        log("published the references of " + ", ".join(nb.id for nb in to_publish) + " (autograder/published/)")
    texts = {
        "course.yml": student_course_yaml(course, notebooks),
        "requirements.txt": "\n".join(pinned_requirements(STUDENT_PACKAGES) + ["-e ."]) + "\n",
        "pyproject.toml": pyproject(),
        "README.md": student_readme(course, notebooks, published),
        ".github/workflows/classroom.yml": classroom_workflow(course, notebooks),
        ".gitignore": ".venv/\n__pycache__/\n*.egg-info/\n.ipynb_checkpoints/\n",
    }
    for rel, text in texts.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    summary = ReleaseSummary(out, notebooks)
    for path in out.rglob("*"):
        if path.is_file() and ".git" not in path.relative_to(out).parts[:1]:
            summary.files += 1
            summary.bytes += path.stat().st_size
    log(f"released {len(notebooks)} notebook(s) to {out}: {summary.files} files, {summary.bytes / 1024:.0f} KiB")
    return summary
