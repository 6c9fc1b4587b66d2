"""Demo cells that wait for the student's code: `with demo(): ...`.

A notebook's demos (plots, timings, comparisons with PyTorch) call the
functions the student is writing. While one of them is still the stub, it
raises NotImplementedError, and in Jupyter an exception stops "Run All" at
that cell, so the checks further down never show. Inside `with demo():` the
demo is skipped instead, with one line naming the stub it waits for:

    with demo():
        out, w = scaled_dot_product_attention(q, k, v, mask)
        plt.imshow(w[0])

- NotImplementedError (a stub): a note naming the function that raised it.
- NameError after a demo above was skipped: a note naming the missing result
  (the skipped demo would have defined it).
- Any other error: the usual traceback, then a note that the cells below still
  run. The error is the student's to fix, but it should not hide later checks.
- KeyboardInterrupt and SystemExit are never caught.

The grader never runs demo cells (they carry the "demo" tag); `nbgrader
autograde` does, and finds them quiet on a stub as well.
"""
from __future__ import annotations

import re
import sys
import traceback

SKIPPED = "Demo skipped:"
"""How every skip note starts (tests look for it)."""

FAILED = "Demo stopped with the error above;"
"""How the note after a demo's own error starts (tests make sure the solutions never print it)."""


class demo:  # noqa: N801 - used as `with demo():`, like a function
    """Run a demo cell's body; skip it, with a one-line note, while the code it calls is still a stub."""

    skipped: list[str] = []
    """The stubs that demos of this kernel session have waited for, oldest first."""

    def __enter__(self) -> "demo":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False  # no error, or KeyboardInterrupt / SystemExit: as usual
        if isinstance(exc, NotImplementedError):
            stub = _raiser(tb)
            demo.skipped.append(stub)
            print(f"{SKIPPED} {stub} is still a stub (it raises NotImplementedError). "
                  "Write it, then run this cell again.")
            return True
        missing = _missing_name(exc) if isinstance(exc, NameError) else None
        if missing and demo.skipped:
            print(f"{SKIPPED} it uses {missing}, which a demo above defines; that demo was skipped "
                  f"(it waits for {demo.skipped[-1]}). Run it again once that is written, then this cell.")
            return True
        _show_traceback(exc_type, exc, tb)
        print(f"{FAILED} the cells below still run. Fix the error, then run this cell again.")
        return True


def _missing_name(exc: NameError) -> str | None:
    """The name a NameError is about (its `name`, or the one quoted in its message for an UnboundLocalError)."""
    name = getattr(exc, "name", None)
    if isinstance(name, str):
        return name
    quoted = re.search(r"'(\w+)'", str(exc))
    return quoted[1] if quoted else None


def _raiser(tb) -> str:
    """The function or method whose body raised: the innermost frame of the traceback, as `Class.method`."""
    name = "a function it calls"
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name != "<module>":
            name = getattr(code, "co_qualname", code.co_name)
        tb = tb.tb_next
    return name


def _show_traceback(exc_type, exc, tb) -> None:
    """The error as Jupyter shows an uncaught one (IPython's traceback when running in it), without stopping."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        shell.showtraceback((exc_type, exc, tb))
    else:
        traceback.print_exception(exc_type, exc, tb)
