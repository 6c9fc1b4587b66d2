"""The student's check: public cases, in the notebook (`check(fn)`) or from the shell.

`check(obj)` runs in the student's own kernel on their object, passed
explicitly, and compares with the public answer key shipped as data. The
shell command executes the whole notebook in a sandbox first, exactly as the
instructor's grader does, and then judges every item on the public cases.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import compare, reference
from .config import ROOT, ConfigError, load_course


class CheckFailed(AssertionError):
    """Raised by `check` when a public case fails, so that nbgrader's test cell fails too.

    In Jupyter it shows the feedback only, not a traceback.
    """

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def _render_traceback_(self):
        return self.text.splitlines()


class CheckReport:
    """The result of `check` for one item; rich HTML in Jupyter, plain text elsewhere."""

    def __init__(self, item_id: str, results: list[compare.CaseResult], message: str = ""):
        self.item_id, self.results, self.message = item_id, results, message

    @property
    def passed(self) -> bool:
        return not self.message and all(r.passed for r in self.results)

    def text(self) -> str:
        if self.message:
            return f"FAIL {self.item_id}: {self.message}"
        n_pass = sum(r.passed for r in self.results)
        head = f"{'PASS' if self.passed else 'FAIL'} {self.item_id}: {n_pass}/{len(self.results)} public cases passed"
        return "\n".join([head] + [r.text() for r in self.results if not r.passed])

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        import html

        color = "#17702b" if self.passed else "#b3261e"
        body = html.escape(self.text())
        return f"<pre style='border-left:4px solid {color};padding:.4em .8em;white-space:pre-wrap'>{body}</pre>"


def check(obj, item: str | None = None) -> CheckReport:
    """Check one exercise on its public cases: `check(scaled_dot_product_attention)`.

    For a quiz, pass the id: `check(quiz_sqrt_dk, item="quiz_sqrt_dk")`.
    Raises CheckFailed (an AssertionError) when a case fails.
    """
    from .exercise import StudentError, exercises
    from .sandbox import _fresh, _plain_outputs, _safe_type_name

    item_id = item or getattr(obj, "__name__", None)
    if not isinstance(item_id, str):
        raise TypeError("check(obj) needs a function or class; for a quiz answer use check(answer, item='quiz_id')")
    course = load_course()
    nb, _ = course.item(item_id)
    ik = reference.load_public(nb.id)[item_id]
    ex = exercises(nb.id)[item_id]
    raw = {}
    for ck in ik["cases"]:
        got: dict = {"outputs": None, "error": "", "error_type": ""}
        try:
            got["outputs"] = _plain_outputs(ex.run(obj, _fresh(ck["inputs"])))
        except StudentError as exc:
            got.update(error=f"StudentError: {exc}", error_type="StudentError")
        except Exception as exc:  # noqa: BLE001 - the student's code may raise anything
            got.update(error=f"{_safe_type_name(exc)}: {exc}", error_type=_safe_type_name(exc))
        raw[ck["name"]] = got
    results = compare.judge_item(item_id, ik, raw, 1.0 / max(1, len(ik["cases"])))
    report = CheckReport(item_id, results)
    if not report.passed:
        raise CheckFailed(report.text())
    _show(report)
    return None


def _show(report: CheckReport) -> None:
    try:
        from IPython import get_ipython

        if get_ipython() is not None:
            from IPython.display import display

            display(report)
            return
    except ImportError:
        pass
    print(report.text())


def find_notebook(course, path: Path):
    stem = path.stem
    for nb in course.notebooks:
        if nb.id == stem:
            return nb
    names = ", ".join(nb.id for nb in course.notebooks)
    raise ConfigError(f"{path}: not a notebook of this course (its file name must be one of: {names})")


def check_notebook(path: Path, as_json: bool = False, out=sys.stdout) -> int:
    """Execute a notebook in the sandbox and judge it on the public cases. Exit code 0 when all pass."""
    from . import grade, notebook
    from .worker import preload, run_job

    course = load_course()
    nb = find_notebook(course, path)
    release_path = ROOT / "weeks" / nb.path
    keys = {nb.id: reference.load_public(nb.id)}
    preload()
    run = grade.Run(course, keys, {nb.id: notebook.read(release_path)} if release_path.exists() else {},
                    run_job, [], "")
    sub = grade.Submission("you", nb, path)
    for step in grade.PIPELINE:
        step(sub, run)
    result = sub.result
    auto = [i for i in result["items"] if not i.get("manual")]
    all_passed = result["status"] == "graded" and all(
        not i["message"] and all(c["passed"] for c in i["cases"]) for i in auto
    )
    if as_json:
        json.dump({"notebook": nb.id, "passed": all_passed, "result": result}, out, indent=2, default=str)
        out.write("\n")
        return 0 if all_passed else 1
    out.write(f"{nb.title} ({path})\n")
    if result["status"] != "graded":
        out.write(f"  {result['message']}\n")
    for problem in result.get("cell_problems", []):
        out.write(f"  note: cell {problem['index'] + 1}: {problem['error']}\n")
    for item in auto:
        cases = [compare.CaseResult(**c) for c in item["cases"]]
        report = CheckReport(item["id"], cases, item["message"])
        for line in report.text().splitlines():
            out.write(f"  {line}\n")
    n_pass = sum(1 for i in auto if not i["message"] and all(c["passed"] for c in i["cases"]))
    out.write(f"{n_pass}/{len(auto)} items pass their public cases"
              f"{'' if all_passed else '; the instructor also grades hidden cases'}.\n")
    return 0 if all_passed else 1
