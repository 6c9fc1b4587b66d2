"""Batch grading: every submission in SUBMITTED, through an explicit pipeline of steps.

Each step has the signature `step(sub, run)` and declares what it `needs` and
what it `gives`; `PIPELINE` is their order (a test checks that every step's
needs are given by an earlier one). Student code only ever runs inside the
sandbox behind `execute`; the other steps run here, in the trusted process.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import compare, notebook, reference
from .config import ROOT, ConfigError, Course, Notebook, _did_you_mean
from .gradebook import Gradebook

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


class GradingError(Exception):
    """The instructor's mistake (a missing folder, a bad course.yml): grading cannot start."""


@dataclass
class Submission:
    """One student's notebook, and everything the pipeline learns about it."""

    student_id: str
    notebook: Notebook
    path: Path
    digest: str = ""
    nb: notebook.Notebook | None = None
    job: dict | None = None
    raw: dict | None = None
    result: dict = field(default_factory=dict)
    failed: str = ""
    """Set when the submission cannot be graded at all (unreadable); later steps then only score 0."""


@dataclass
class Run:
    """What every step may use: the course, the answer keys, the release notebooks, the workers."""

    course: Course
    keys: dict[str, dict]
    releases: dict[str, notebook.Notebook]
    execute_job: object
    grader_digest: str
    references: Path | None = None
    """The course root whose solutions/ give the references of earlier notebooks (`autograder.earlier`)
    to the sandbox; None for the student's own `check`, where the import reads their own notebooks."""


def step(needs: tuple[str, ...], gives: tuple[str, ...]):
    def mark(fn):
        fn.needs, fn.gives = needs, gives
        return fn

    return mark


@step(needs=("path",), gives=("nb",))
def read_submission(sub: Submission, run: Run) -> None:
    """Read and validate the notebook; an unreadable one is recorded, not fatal."""
    try:
        sub.nb = notebook.read(sub.path)
    except notebook.NotebookError as exc:
        sub.failed = str(exc)


@step(needs=("nb",), gives=("job",))
def plan_job(sub: Submission, run: Run) -> None:
    """The cells to execute (matched against the release) and every case of every item.

    The reference pieces an item builds on go in the job's "inject", which stays
    with the grader: the item's fork gets them only when it asks, after the
    pieces' own items were graded. The job's "earlier" holds the references of
    the earlier notebooks the notebook imports from (`from autograder.earlier
    import ...`), which the sandbox gives that import before the cells run.
    """
    if sub.failed:
        return
    key = run.keys[sub.notebook.id]
    cells = notebook.cells_to_run(sub.nb, run.releases.get(sub.notebook.id))
    items, inject = [], {}
    for item in sub.notebook.auto_items:
        cases = [{"name": c["name"], "inputs": c["inputs"]} for c in key[item.id]["cases"]]
        sources = key[item.id].get("inject", {})
        items.append({"key": item.id, "id": item.id, "notebook": sub.notebook.id, "cases": cases,
                      "needs": bool(sources)})
        if sources:
            inject[item.id] = sources
    sub.job = {
        "cells": [{"index": c.index, "source": c.source} for c in cells], "skip": [], "items": items,
        "limits": reference.limits_dict(run.course), "inject": inject,
    }
    if run.references is not None:
        from . import earlier

        release = run.releases.get(sub.notebook.id)
        sources = [c.source for c in cells + (notebook.cells_to_run(release, None) if release else [])]
        sub.job["earlier"] = earlier.needed(run.course, sub.notebook, earlier.imported_names(sources), run.references)


@step(needs=("job",), gives=("raw",))
def execute(sub: Submission, run: Run) -> None:
    """Run the job in a sandbox (through a worker); only plain data comes back."""
    if sub.failed:
        return
    sub.raw = run.execute_job(sub.job)
    if "fatal" in sub.raw:
        sub.failed = f"the grader could not run this notebook: {sub.raw['fatal']}"


@step(needs=("raw",), gives=("result",))
def judge(sub: Submission, run: Run) -> None:
    """Compare every case with the key, name mistakes, and score each item."""
    key = run.keys[sub.notebook.id]
    raw_items = (sub.raw or {}).get("items", {})
    numbers = notebook.code_cell_numbers(sub.nb)  # cells named as Jupyter's In [n] ({} without a notebook)
    items = []
    for item in sub.notebook.auto_items:
        ik = key[item.id]
        raw = raw_items.get(item.id, {"status": "missing" if not sub.failed else "unreadable", "cases": {}})
        share = item.points / max(1, len(ik["cases"]))
        cases, message = [], ""
        if sub.failed:
            message = sub.failed
        elif raw["status"] == "missing":
            message = (f"{item.id} is not defined after running the notebook; keep the name and signature "
                       f"of the exercise cell")
            message += _cell_errors_note(sub.raw, numbers)
        elif raw["status"] == "killed":
            message = f"{item.id}: {raw['error']}"
        if not message:
            cases = compare.judge_item(item.id, ik, _hide_hidden_messages(ik, raw["cases"]), share)
        score = round(sum(c.score for c in cases), 6)
        if cases and all(c.passed for c in cases):
            score = item.points
        mistakes = [c.mistake["name"] for c in cases if c.mistake]
        items.append({
            "id": item.id, "score": score, "max_score": item.points, "extra_credit": item.extra_credit,
            "message": message, "mistake": max(set(mistakes), key=mistakes.count) if mistakes else None,
            "cases": [c.__dict__ for c in cases],
        })
    for item in sub.notebook.items:
        if item.manual:
            items.append({"id": item.id, "score": 0.0, "max_score": item.points, "manual": True,
                          "message": "graded by hand", "mistake": None, "cases": [],
                          "extra_credit": item.extra_credit})
    cells = [dict(c, index=int(i), number=numbers.get(int(i))) for i, c in (sub.raw or {}).get("cells", {}).items()
             if c["status"] != "ok"]
    sub.result = {
        "student_id": sub.student_id, "notebook_id": sub.notebook.id, "title": sub.notebook.title,
        "status": "unreadable" if sub.failed else "graded", "message": sub.failed,
        "seconds": round((sub.raw or {}).get("seconds", 0.0), 3), "peak_mb": (sub.raw or {}).get("peak_mb", 0.0),
        "items": items,
        "cell_problems": sorted(cells, key=lambda c: c["index"]),
        "sandbox": (sub.raw or {}).get("features", {}),
    }


def _hide_hidden_messages(item_key: dict, raw_cases: dict) -> dict:
    """The student's own error messages on hidden cases, reduced to the error's type: a message can quote
    the inputs (shapes, values), and hidden-case inputs are never shown. The grader's own messages about the
    answer's form (StudentError) stay."""
    hidden = {c["name"] for c in item_key["cases"] if not c.get("public")}
    out = {}
    for name, got in raw_cases.items():
        if name in hidden and isinstance(got, dict) and got.get("error") and got.get("error_type") != "StudentError":
            kind = got.get("error_type") or "an exception"
            got = dict(got, error=f"{kind} (its message is not shown on hidden cases)")
        out[name] = got
    return out


@step(needs=("nb", "result"), gives=("manual",))
def collect_manual(sub: Submission, run: Run) -> None:
    """Collect the free-text answers for the instructor."""
    ids = {i.id for i in sub.notebook.items if i.manual}
    sub.result["manual"] = notebook.manual_answers(sub.nb, ids) if sub.nb is not None else {}


PIPELINE = [read_submission, plan_job, execute, judge, collect_manual]


def _cell_errors_note(raw, numbers: dict[int, int]) -> str:
    """The first cell that failed, numbered as Jupyter's In [n] (`numbers`: notebook.code_cell_numbers)."""
    bad = sorted((int(i), c) for i, c in (raw or {}).get("cells", {}).items() if c["status"] != "ok")
    if not bad:
        return ""
    index, cell = bad[0]
    return f" (code cell {numbers.get(index, index + 1)} failed: {cell['error']})"


def discover(course: Course, submitted: Path) -> tuple[list[tuple[str, Notebook, Path]], list[str]]:
    """Submissions in nbgrader's layout <student_id>/<week>/<notebook>.ipynb, and problems found.

    Read safely: a student folder, week folder or notebook that is a link, or that
    resolves outside SUBMITTED, is refused and reported (a cloned repository can
    carry links to another student's work or to the course's solutions).
    """
    if not submitted.is_dir():
        raise GradingError(f"{submitted}: no such folder; pass the folder that holds <student_id>/<week>/<notebook>.ipynb")
    top = submitted.resolve()
    by_path = {nb.path: nb for nb in course.notebooks}
    found, problems = [], []

    def safe(path: Path) -> bool:
        if path.is_symlink():
            problems.append(f"{path}: a symbolic link; refused (submit the file itself)")
            return False
        if not path.resolve().is_relative_to(top):
            problems.append(f"{path}: resolves outside {submitted}; refused")
            return False
        return True

    for student_dir in sorted(submitted.iterdir()):
        if not safe(student_dir) or not student_dir.is_dir():
            continue
        student = student_dir.name
        if not STUDENT_ID.match(student):
            problems.append(f"{student_dir}: student id {student!r} is not allowed (letters, digits, . _ @ + - only); skipped")
            continue
        for week_dir in sorted(student_dir.iterdir()):
            if week_dir.name == ".ipynb_checkpoints" or not safe(week_dir) or not week_dir.is_dir():
                continue
            for path in sorted(week_dir.iterdir()):
                if path.suffix != ".ipynb" or not safe(path) or not path.is_file():
                    continue
                rel = f"{week_dir.name}/{path.name}"
                if rel in by_path:
                    found.append((student, by_path[rel], path))
                else:
                    problems.append(f"{path}: not a notebook of this course{_did_you_mean(rel, by_path)}; skipped")
    if not found:
        raise GradingError(f"{submitted}: no submissions found in the layout <student_id>/<week>/<notebook>.ipynb")
    return found, problems


def grader_digest(keys_digest: str, course: Course | None = None) -> str:
    """A digest of everything a result depends on besides the notebook: the keys, the grader's code, and
    the course settings that score it (points, limits, late policy)."""
    h = hashlib.sha256(keys_digest.encode())
    for path in sorted((ROOT / "autograder").rglob("*.py")):
        h.update(path.read_bytes())
    if course is not None:
        h.update(repr((course.grading.limits, [nb for nb in course.notebooks], getattr(course, "late", None))).encode())
    return h.hexdigest()[:20]


def _fatal_result(sub: Submission, run: Run, exc: BaseException) -> None:
    """A submission the pipeline failed on: recorded as that submission's result, never stopping the batch."""
    sub.failed = sub.failed or (f"the grader could not grade this notebook ({type(exc).__name__}); "
                                "tell your instructor")
    sub.raw = None
    try:
        judge(sub, run)
        sub.result.setdefault("manual", {})
    except Exception:  # noqa: BLE001
        sub.result = {"student_id": sub.student_id, "notebook_id": sub.notebook.id, "title": sub.notebook.title,
                      "status": "unreadable", "message": sub.failed, "seconds": 0.0, "peak_mb": 0.0,
                      "items": [], "cell_problems": [], "sandbox": {}, "manual": {}}


def grade_all(course: Course, submitted: Path, out: Path, workers: int = 0, progress=sys.stderr,
              root: Path = ROOT, pages: bool = True, sandbox: bool = True) -> dict:
    """Grade every submission into OUT; returns a summary. Raises GradingError for the instructor's mistakes.

    Without `pages`, only the gradebook and the results.json files are written (what `nbgrader
    autograde` produces); `python -m autograder report OUT` draws the feedback pages and the class
    report later. `sandbox=False` (`--no-sandbox`) grades without the jail: only for trusted notebooks.
    """
    from . import jail, report
    from .worker import Pool, run_reference

    submitted, out = Path(submitted).resolve(), Path(out).resolve()
    if sandbox:
        why = jail.unavailable_reason()
        if why:
            raise GradingError(f"cannot sandbox student code: {why}. To grade trusted notebooks without a "
                               "sandbox, pass --no-sandbox")
    found, problems = discover(course, submitted)
    _refuse_stale(course, {nb.id: nb for _, nb, _ in found}.values(), root)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GradingError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    n = workers or course.grading.workers or os.cpu_count() or 1
    started = time.monotonic()
    book = Gradebook(out / "gradebook.db")
    notebooks = {nb.id: nb for _, nb, _ in found}
    with Pool(min(n, max(1, len(found))), list(notebooks), sandbox=sandbox) as pool:
        keys = {nb_id: reference.load_key(course, nb, run_reference, root) for nb_id, nb in notebooks.items()}
        for nb_id, nb in notebooks.items():
            _add_injections(course, nb, keys[nb_id], root)
        releases = {nb_id: notebook.read(root / "weeks" / nb.path) for nb_id, nb in notebooks.items()
                    if (root / "weeks" / nb.path).exists()}
        digest = grader_digest("".join(reference.key_digest(course, nb, root) for nb in notebooks.values()), course)
        run = Run(course, keys, releases, pool.run, digest, references=root)
        todo, skipped = [], 0
        for student, nb, path in found:
            sub = Submission(student, nb, path)
            try:
                sub.digest = hashlib.sha256(path.read_bytes() + digest.encode()).hexdigest()
            except OSError as exc:
                problems.append(f"{path}: cannot be read ({exc.strerror}); skipped")
                continue
            if book.digest(student, nb.id) == sub.digest:
                skipped += 1
            else:
                todo.append(sub)
        done = 0

        def grade_one(sub: Submission) -> Submission:
            try:
                for s in PIPELINE:
                    s(sub, run)
            except Exception as exc:  # noqa: BLE001 - one submission never stops the batch
                _fatal_result(sub, run, exc)
            return sub

        with ThreadPoolExecutor(max_workers=n) as threads:
            for sub in threads.map(grade_one, todo):
                book.record(sub.student_id, sub.notebook.id, sub.digest, sub.result)
                done += 1
                _progress(progress, done, len(todo), started)
        worker_peak = pool.peak_mb
    report.write_outputs(course, book, out, jobs=n, pages=pages,
                         run={"seconds": time.monotonic() - started, "graded": len(todo), "unchanged": skipped,
                              "workers": n})
    book.close()
    return {"graded": len(todo), "unchanged": skipped, "problems": problems,
            "seconds": time.monotonic() - started, "workers": n, "worker_peak_mb": worker_peak}


def _refuse_stale(course: Course, notebooks, root: Path) -> None:
    """Refuse to grade against weeks/ notebooks older than solutions/ (as `release` does).

    A notebook found fresh once is remembered by the digest of both files in .cache/fresh/.
    Without solutions/ (a grading bundle) there is nothing to compare with.
    """
    from .release import ReleaseError, check_built

    if not (root / "solutions").is_dir():
        return
    stale = []
    for nb in notebooks:
        try:
            parts = [(root / "solutions" / nb.path).read_bytes(), (root / "weeks" / nb.path).read_bytes()]
        except OSError:
            parts = None
        mark = root / ".cache" / "fresh" / (hashlib.sha256(b"\0".join(parts)).hexdigest()[:32] if parts else "")
        if parts and mark.is_file():
            continue
        stale.append(nb)
    if not stale:
        return
    try:
        check_built(course, stale, root)
    except ReleaseError as exc:
        raise GradingError(str(exc).replace("cannot release", "cannot grade", 1)) from None
    for nb in stale:
        parts = [(root / "solutions" / nb.path).read_bytes(), (root / "weeks" / nb.path).read_bytes()]
        mark = root / ".cache" / "fresh" / hashlib.sha256(b"\0".join(parts)).hexdigest()[:32]
        try:
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.touch()
        except OSError:
            pass  # a read-only course: check again next time


def _add_injections(course: Course, nb: Notebook, key: dict, root: Path) -> None:
    """Reference sources of the earlier items an item builds on (never of the item itself)."""
    from .exercise import exercises

    exs = exercises(nb.id)
    for item in nb.auto_items:
        needs = exs[item.id].needs
        if not needs:
            continue
        sources = {}
        for need in needs:
            if need == item.id:
                raise ConfigError(f"{nb.id}: item {item.id} cannot need itself")
            owner, _ = course.item(need)
            if owner.id == nb.id and [i.id for i in nb.auto_items].index(need) > [i.id for i in nb.auto_items].index(item.id):
                raise ConfigError(f"{nb.id}: item {item.id} needs {need}, which comes after it; "
                                  "an item may only build on earlier ones")
            sources[need] = reference.solution_sources(owner, root)[need]
        key[item.id]["inject"] = sources


def _progress(stream, done: int, total: int, started: float) -> None:
    if stream is None or total == 0:
        return
    elapsed = time.monotonic() - started
    eta = elapsed / done * (total - done)
    width = 30
    bar = "#" * int(width * done / total)
    stream.write(f"\rgrading [{bar:<{width}}] {done}/{total}  {elapsed:5.1f}s elapsed, ETA {eta:5.1f}s")
    if done == total:
        stream.write("\n")
    stream.flush()
