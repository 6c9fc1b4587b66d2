"""What the hidden-test regions of the source notebooks' test cells run (nbgrader's grading path).

Each test cell of a source notebook starts with a hidden region:

    ### BEGIN HIDDEN TESTS
    from autograder.hidden_tests import check_all
    check_all(MultiHeadAttention)
    ### END HIDDEN TESTS
    check(MultiHeadAttention)

The release drops the region (nbgrader's ClearHiddenTests), so students only
run `check`. `nbgrader autograde` puts it back and runs it in the student's
kernel: `check_all` runs every case of the item, public and hidden, compares
them with the full answer key exactly as `python -m autograder grade` does
(same runners, same comparison), and raises when any case fails. Like the
grader, it first gives the item the reference versions of the earlier pieces
it builds on (`Exercise.needs`), and, like the grader, leaves them in place:
the public `check` that follows, and the later items, then use them too, so a
bug in an earlier piece costs its points once. So an nbgrader test cell
passes, and nbgrader gives the item's points, exactly when our grader gives
the item full points. (Our grader also gives partial credit per case; nbgrader
is all-or-nothing per test cell.)

This runs student code in the grading process, nbgrader's model, with none of
the sandbox's protections: use it where nbgrader is required, and
`python -m autograder grade` where the points matter. Instructor only: it is
not in the student release, and neither is the key it needs.
"""
from __future__ import annotations

import sys

from . import compare, reference
from .config import ROOT, load_course


class HiddenTestFailed(AssertionError):
    """An item failed one of its cases: the test cell, and its nbgrader points, fail."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def _render_traceback_(self):
        return self.text.splitlines()


def full_key(course, nb) -> dict:
    """The full answer key of a notebook: from .cache/keys/, or computed now in a grading worker."""
    try:
        return reference.load_key(course, nb, None)
    except reference.ReferenceError_:
        from .worker import run_reference

        return reference.load_key(course, nb, run_reference)


def check_all(obj, item: str | None = None) -> None:
    """Run every case of one item (public and hidden) on `obj`; raise HiddenTestFailed when one fails.

    `item` names a quiz (whose answer has no name of its own), as for `check`.
    """
    from .exercise import StudentError, describe_error, exercises, jupyter_cell_label
    from .grade import _add_injections
    from .sandbox import _fresh, _plain_outputs, _safe_type_name

    item_id = item or getattr(obj, "__name__", None)
    if not isinstance(item_id, str):
        raise TypeError("check_all(obj) needs a function or class; for a quiz answer pass item='quiz_id'")
    course = load_course()
    nb, it = course.item(item_id)
    key = full_key(course, nb)
    _add_injections(course, nb, key, ROOT)
    ik = key[item_id]
    ex = exercises(nb.id)[item_id]
    # The earlier pieces this item builds on become the reference versions, in the caller's namespace
    # (the kernel's), as the grader does in its sandbox; they stay, as there.
    namespace = sys._getframe(1).f_globals
    for name, source in ik.get("inject", {}).items():
        exec(compile(source, f"<reference {name}>", "exec"), namespace)
    raw = {}
    for case in ik["cases"]:
        got: dict = {"outputs": None, "error": "", "error_type": ""}
        try:
            got["outputs"] = _plain_outputs(ex.run(obj, _fresh(case["inputs"])))
        except StudentError as exc:
            got.update(error=f"StudentError: {exc}", error_type="StudentError")
        except Exception as exc:  # noqa: BLE001 - the student's code may raise anything
            got.update(error=describe_error(exc, jupyter_cell_label()), error_type=_safe_type_name(exc))
        raw[case["name"]] = got
    results = compare.judge_item(item_id, ik, raw, it.points / max(1, len(ik["cases"])))
    failed = [r for r in results if not r.passed]
    if failed:
        lines = [f"FAIL {item_id}: {len(failed)} of {len(results)} cases fail (public and hidden)"]
        lines += [r.text() for r in failed]
        raise HiddenTestFailed("\n".join(lines))
    print(f"PASS {item_id}: all {len(results)} cases (public and hidden)")
