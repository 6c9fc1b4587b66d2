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

INTERNAL = "this is a problem of the checker, not of your {what}; please tell the instructor"


class CheckFailed(AssertionError):
    """Raised by `check` when a public case fails, so that nbgrader's test cell fails too.

    In Jupyter it shows the feedback only, not a traceback.
    """

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def _render_traceback_(self):
        return self.text.splitlines()


class CheckError(Exception):
    """The check could not run (a wrong argument, or a problem of the checker itself).

    In Jupyter it shows the message only, never a traceback of the checker's own code.
    """

    def _render_traceback_(self):
        return str(self).splitlines()


class CheckReport:
    """The result of `check` for one item; rich HTML in Jupyter, plain text elsewhere."""

    SHOWN = 3
    """Failing cases shown in full in the HTML; the rest are folded away."""

    def __init__(self, item_id: str, results: list[compare.CaseResult], message: str = ""):
        self.item_id, self.results, self.message = item_id, results, message

    @property
    def passed(self) -> bool:
        return not self.message and all(r.passed for r in self.results)

    def text(self) -> str:
        """Plain text for a terminal: no markup, no colour codes."""
        if self.message:
            return f"FAIL {self.item_id}: {self.message}"
        n_pass = sum(r.passed for r in self.results)
        head = f"{'PASS' if self.passed else 'FAIL'} {self.item_id}: {n_pass}/{len(self.results)} public cases passed"
        return "\n".join([head] + [r.text() for r in self.results if not r.passed])

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        """A compact card: a PASS/FAIL line, then each failing case's problems and the mistake it looks like."""
        import html

        e = html.escape
        ok = self.passed
        color = "#17702b" if ok else "#b3261e"
        box = (f"font-family:system-ui,sans-serif;font-size:13px;line-height:1.35;border-left:4px solid {color};"
               "padding:.35em .8em;margin:.2em 0;background:#fafafa")
        mono = "font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px"
        badge = (f"<span style='background:{color};color:white;border-radius:3px;padding:0 .4em;"
                 f"font-weight:600'>{'PASS' if ok else 'FAIL'}</span>")
        name = f"<code style='{mono}'>{e(self.item_id)}</code>"
        if self.message:
            return f"<div style='{box}'>{badge} {name}: {e(self.message)}</div>"
        n_pass = sum(r.passed for r in self.results)
        parts = [f"<div style='{box}'>{badge} {name}: {n_pass} of {len(self.results)} public cases passed"]
        failing = [r for r in self.results if not r.passed]
        for i, r in enumerate(failing):
            if i == self.SHOWN:
                parts.append(f"<details><summary>{len(failing) - self.SHOWN} more failing case"
                             f"{'s' if len(failing) - self.SHOWN != 1 else ''}</summary>")
            note = f" <span style='color:#6b6b6b'>({e(r.note)})</span>" if r.note else ""
            parts.append(f"<div style='margin-top:.45em'><b>case {e(r.case)}</b>{note}</div>")
            parts.append(f"<pre style='{mono};margin:.15em 0;white-space:pre-wrap;background:none;padding:0'>"
                         + e("\n".join(r.problems)) + "</pre>")
            if r.mistake:
                parts.append("<div style='background:#fff4e5;border-left:3px solid #f0a030;padding:.2em .6em'>"
                             f"<b>Likely mistake:</b> {e(r.mistake['title'])}.<br>"
                             f"<b>Hint:</b> {e(r.mistake['hint'])}.</div>")
        if len(failing) > self.SHOWN:
            parts.append("</details>")
        if ok:
            parts.append("<div style='color:#6b6b6b;font-size:12px'>The instructor also grades hidden cases.</div>")
        parts.append("</div>")
        return "".join(parts)


def check(obj, item: str | None = None) -> CheckReport:
    """Check one exercise on its public cases: `check(scaled_dot_product_attention)`.

    For a quiz, pass the id: `check(quiz_sqrt_dk, item="quiz_sqrt_dk")`.
    Raises CheckFailed (an AssertionError) when a case fails, and CheckError when the
    check cannot run (an unknown item, or a problem of the checker).
    """
    item_id = item or getattr(obj, "__name__", None)
    if not isinstance(item_id, str):
        raise CheckError("check(obj) needs a function or class; for a quiz answer use check(answer, item='quiz_id')")
    try:
        report = _check(obj, item_id)
    except ConfigError as exc:
        raise CheckError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the student's own errors are caught per case, in _check
        raise CheckError(f"check({item_id}) could not run ({type(exc).__name__}: {exc}); "
                         + INTERNAL.format(what="code")) from None
    if not report.passed:
        raise CheckFailed(report.text())
    _show(report)
    return None


def _check(obj, item_id: str) -> CheckReport:
    from .exercise import exercises
    from .sandbox import _describe_error, _fresh, _plain_outputs, _safe_type_name

    course = load_course()
    nb, _ = course.item(item_id)
    ik = reference.load_public(nb.id)[item_id]
    ex = exercises(nb.id)[item_id]
    raw = {}
    for ck in ik["cases"]:
        got: dict = {"outputs": None, "error": "", "error_type": ""}
        try:
            got["outputs"] = _plain_outputs(ex.run(obj, _fresh(ck["inputs"])))
        except Exception as exc:  # noqa: BLE001 - the student's code may raise anything
            got.update(error=_describe_error(exc), error_type=_safe_type_name(exc))
        raw[ck["name"]] = got
    return CheckReport(item_id, compare.judge_item(item_id, ik, raw, 1.0 / max(1, len(ik["cases"]))))


def _show(report: CheckReport) -> None:
    """Rich output in Jupyter, plain text elsewhere (IPython is only consulted when already running)."""
    ipython = sys.modules.get("IPython")
    if ipython is not None and ipython.get_ipython() is not None:
        from IPython.display import display

        display(report)
        return
    print(report.text())


def find_notebook(course, path: Path):
    stem = path.stem
    for nb in course.notebooks:
        if nb.id == stem:
            return nb
    names = ", ".join(nb.id for nb in course.notebooks)
    raise ConfigError(f"{path}: not a notebook of this course (its file name must be one of: {names})")


def check_notebook(path: Path, as_json: bool = False, out=sys.stdout) -> int:
    """Execute a notebook in the sandbox and judge it on the public cases.

    Exit code 0 when all pass, 1 when some fail, 2 when the notebook cannot be read or the
    checker itself fails: then a message naming the file, never a traceback.
    """
    from .notebook import NotebookError
    from .reference import ReferenceError_
    from .source import SourceError

    try:
        return _check_notebook(Path(path), as_json, out)
    except (ConfigError, ReferenceError_, SourceError):
        raise  # the command line explains these (a wrong file name, or the course's own problem)
    except NotebookError as exc:
        message = str(exc)
    except Exception as exc:  # noqa: BLE001 - whatever goes wrong, a message, not a traceback
        message = f"{path}: the check could not run ({type(exc).__name__}: {exc}); " + INTERNAL.format(what="notebook")
    print(f"error: {message}", file=sys.stderr)
    if as_json:
        json.dump({"notebook": Path(path).stem, "passed": False, "error": message}, out, indent=2)
        out.write("\n")
    return 2


def _check_notebook(path: Path, as_json: bool, out) -> int:
    from . import grade, notebook
    from .worker import run_job

    course = load_course()
    nb = find_notebook(course, path)
    notebook.read(path)  # an unreadable notebook is the student's to fix: say so before running anything
    release_path = ROOT / "weeks" / nb.path
    keys = {nb.id: reference.load_public(nb.id)}
    # No preload: this process forks one sandbox, which imports only what the notebook imports.
    run = grade.Run(course, keys, {nb.id: notebook.read(release_path)} if release_path.exists() else {},
                    run_job, "")
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
