"""`with demo():` (autograder/demo.py): a demo cell that waits for the student's stub instead of stopping Run All."""
from __future__ import annotations

import pytest

from autograder import demo
from autograder.demo import FAILED, SKIPPED


@pytest.fixture(autouse=True)
def fresh_session(monkeypatch):
    """Each test starts as a new kernel session: no demo skipped yet."""
    monkeypatch.setattr(demo, "skipped", [])


class Attention:
    def forward(self, x):
        raise NotImplementedError()


def test_a_stub_is_named_and_the_cell_goes_on(capsys):
    """Is a NotImplementedError from a stub method swallowed, with one line naming Class.method, and does the
    code after the `with` block still run?"""
    ran_after = False
    with demo():
        Attention().forward(1)
        raise AssertionError("the body went on after the stub")  # pragma: no cover
    ran_after = True
    out = capsys.readouterr()
    assert ran_after and out.out.startswith(f"{SKIPPED} Attention.forward is still a stub")
    assert "Traceback" not in out.out + out.err
    assert demo.skipped == ["Attention.forward"]


def test_a_result_of_a_skipped_demo_is_named(capsys):
    """After a skipped demo, is a NameError for the result it would have defined a skip that names the missing
    name and the stub it waits for, rather than an error?"""
    cells = ["with demo():\n    model = Attention().forward(1)", "with demo():\n    print(model)"]
    namespace = {"demo": demo, "Attention": Attention}
    for cell in cells:  # as a notebook runs them: top-level code of one namespace
        exec(cell, namespace)
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (f"{SKIPPED} it uses model, which a demo above defines; that demo was skipped (it waits for "
                      "Attention.forward). Run it again once that is written, then this cell.")


def test_other_errors_show_their_traceback_and_let_run_all_go_on(capsys):
    """Is a real error (not a stub), and a NameError when nothing was skipped, shown with its traceback and a note,
    without raising, so that the checks below still run?"""
    with demo():
        [1, 2][5]
    with demo():
        undefined_name  # noqa: B018, F821
    out = capsys.readouterr()
    assert out.err.count("Traceback") == 2 and "IndexError" in out.err and "NameError" in out.err
    assert out.out.count(FAILED) == 2 and SKIPPED not in out.out


def test_interrupts_are_never_caught():
    """Does KeyboardInterrupt (the kernel's Interrupt) still stop the cell?"""
    with pytest.raises(KeyboardInterrupt):
        with demo():
            raise KeyboardInterrupt
