"""The attention course's autograder: build, check, grade, release, report.

Students use `check` in their notebooks; everything else is the command line
(`python -m autograder --help`).
"""


def check(obj, item=None):
    """Check one exercise on its public cases; see autograder.check.check."""
    from .check import check as _check

    return _check(obj, item)


__all__ = ["check"]
