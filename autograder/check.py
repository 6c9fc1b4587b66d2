"""The student's check: public cases, in the notebook (`check(fn)`) or from the shell.

`check(obj)` runs in the student's own kernel on their object, passed
explicitly, and compares with the public answer key shipped as data. The
shell command executes the whole notebook in a sandbox first, exactly as the
instructor's grader does, and then judges every item on the public cases.

In a notebook, `check` shows its card and returns, pass or fail, so that "Run
All" goes on and shows every card in one run. Under nbgrader (which sets
NBGRADER_EXECUTION while it validates or autogrades) a failing check raises
CheckFailed, so that nbgrader's Validate reports it; autograding decides with
the instructor's hidden-test region before it, which always raises on a
failing case.

Errors are located the way Jupyter shows them: in a notebook "cell In [7]",
from the shell "code cell 9" (code cells counted from the top, as the In [n]
numbers of a Run All).
"""
from __future__ import annotations

import ast
import json
import os
import re
import sys
from pathlib import Path

from . import compare, reference
from .config import ROOT, ConfigError, load_course

INTERNAL = "this is a problem of the checker, not of your {what}; please tell the instructor"


class CheckFailed(AssertionError):
    """Raised by `check` under nbgrader (NBGRADER_EXECUTION set) when a public case fails.

    Never in a student's own notebook session, where the card is shown instead and the
    notebook runs on. In Jupyter it shows the feedback only, not a traceback.
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

    @property
    def recorded(self) -> bool:
        """A quiz answer of the right form: recorded, graded later (the check cannot tell if it is right)."""
        return self.passed and bool(self.results) and all(r.recorded for r in self.results)

    RECORDED = "answer recorded (graded later); this check only confirms its form, not whether it is right"

    def text(self) -> str:
        """Plain text for a terminal: no markup, no colour codes."""
        if self.message:
            return f"FAIL {self.item_id}: {self.message}"
        if self.recorded:
            return f"RECORDED {self.item_id}: {self.RECORDED}"
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
        color = "#1f5fa8" if self.recorded else "#17702b" if ok else "#b3261e"
        box = (f"font-family:system-ui,sans-serif;font-size:13px;line-height:1.35;border-left:4px solid {color};"
               "padding:.35em .8em;margin:.2em 0;background:#fafafa")
        mono = "font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px"
        badge = (f"<span style='background:{color};color:white;border-radius:3px;padding:0 .4em;"
                 f"font-weight:600'>{'RECORDED' if self.recorded else 'PASS' if ok else 'FAIL'}</span>")
        name = f"<code style='{mono}'>{e(self.item_id)}</code>"
        if self.message:
            return f"<div style='{box}'>{badge} {name}: {e(self.message)}</div>"
        if self.recorded:
            return f"<div style='{box}'>{badge} {name}: {e(self.RECORDED)}.</div>"
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

    For a quiz, pass the id: `check(quiz_sqrt_dk, item="quiz_sqrt_dk")`; its answer is
    recorded, never judged here. Shows the card (passing or failing) and returns None, so
    that a notebook's "Run All" goes on; under nbgrader (NBGRADER_EXECUTION set) a failing
    case raises CheckFailed (an AssertionError). Raises CheckError when the check cannot
    run (an unknown item, or a problem of the checker).
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
    if not report.passed and os.environ.get("NBGRADER_EXECUTION"):
        raise CheckFailed(report.text())
    _show(report)
    return None


def _check(obj, item_id: str) -> CheckReport:
    from .exercise import describe_error, exercises, jupyter_cell_label
    from .sandbox import _fresh, _plain_outputs, _safe_type_name

    course = load_course()
    nb, _ = course.item(item_id)
    ik = reference.load_public(nb.id)[item_id]
    ex = exercises(nb.id)[item_id]
    label = jupyter_cell_label()
    raw = {}
    for ck in ik["cases"]:
        got: dict = {"outputs": None, "error": "", "error_type": ""}
        try:
            got["outputs"] = _plain_outputs(ex.run(obj, _fresh(ck["inputs"])))
        except Exception as exc:  # noqa: BLE001 - the student's code may raise anything
            got.update(error=describe_error(exc, label), error_type=_safe_type_name(exc))
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

    try:
        from .source import SourceError
    except ModuleNotFoundError:  # the student release ships no authoring tools (release.STUDENT_MODULES)
        SourceError = ReferenceError_

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
    cells = _code_cells(path)
    for problem in result.get("cell_problems", []):
        out.write(f"  note: code cell {problem['number']}: {problem['error']}\n")  # the grader numbers as Jupyter
    n_pass = n_recorded = 0
    for item in auto:
        cases = [compare.CaseResult(**c) for c in item["cases"]]
        for case in cases:
            case.problems = [_locate(p, cells, item["id"]) for p in case.problems]
        report = CheckReport(item["id"], cases, item["message"])
        n_recorded += report.recorded
        n_pass += report.passed and not report.recorded
        for line in report.text().splitlines():
            out.write(f"  {line}\n")
    recorded = f"; {n_recorded} quiz answer{'s' if n_recorded != 1 else ''} recorded (graded later)" if n_recorded else ""
    out.write(f"{n_pass}/{len(auto) - n_recorded} items pass their public cases{recorded}"
              f"{'' if all_passed else '; the instructor also grades hidden cases'}.\n")
    return 0 if all_passed else 1


# Cells named as Jupyter shows them: code cells only, counted from the top (the In [n] of a Run All).

def _code_cells(path: Path) -> dict[int, tuple[int, dict]]:
    """{notebook cell index: (code cell number, cell)} of the submitted notebook (empty when unreadable)."""
    from . import notebook

    try:
        nb = notebook.read(path)
    except Exception:  # noqa: BLE001 - the run above already said what is wrong with the file
        return {}
    return {index: (number, nb.cells[index]) for index, number in notebook.code_cell_numbers(nb).items()}


_WHERE = re.compile(r" \(line (?P<line>\d+): (?P<code>.+)\)$")


def _locate(problem: str, cells: dict, item_id: str) -> str:
    """A sandbox error "raised X (line N: code)" with the function and code cell it came from, when certain.

    The sandbox reports only the line (number and code) of the student's frame. The
    cell is the code cell whose line N is that code: the only one, or the only one of
    several that defines the item being checked; the function is the def (or class)
    around that line. When neither is certain, the problem stays as it is.
    """
    if not problem.startswith("raised "):
        return problem
    match = _WHERE.search(problem)
    if match is None:
        return problem
    lineno, code = int(match["line"]), match["code"]
    found = []
    for number, cell in cells.values():
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source if isinstance(source, str) else ""
        lines = source.splitlines()
        if 0 < lineno <= len(lines) and lines[lineno - 1].strip()[:100] == code:
            found.append((number, source))
    if len(found) > 1:
        own = re.compile(rf"^\s*(def|class)\s+{re.escape(item_id)}\b", re.M)
        found = [f for f in found if own.search(f[1])]
    if len(found) != 1:
        return problem
    number, source = found[0]
    function = _enclosing(source, lineno)
    where = (f"in {function}, " if function else "") + f"code cell {number}, line {lineno}: {code}"
    return problem[:match.start()] + f" ({where})"


def _enclosing(source: str, lineno: int) -> str | None:
    """The qualified name of the innermost def or class around line `lineno` of a cell."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    names: list[str] = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                end = getattr(child, "end_lineno", None) or child.lineno
                if child.lineno <= lineno <= end:
                    names.append(prefix + child.name)
                    visit(child, prefix + child.name + ".")
                    return
            elif hasattr(child, "body") or hasattr(child, "orelse"):
                visit(child, prefix)

    visit(tree, "")
    return names[-1] if names else None
