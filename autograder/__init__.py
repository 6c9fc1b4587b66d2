"""The attention course's autograder: build, check, grade, release, report.

Students use `check` in their notebooks; everything else is the command line
(`python -m autograder --help`).
"""
from .check import check  # the function, also after `import autograder.check`

__all__ = ["check"]
