"""The attention course's autograder: build, check, grade, release, report.

Students use `check` and `with demo():` (a demo that waits for a stub) in their
notebooks; everything else is the command line
(`python -m autograder --help`).
"""
from .check import check  # the function, also after `import autograder.check`
from .demo import demo  # the context manager, also after `import autograder.demo`

__all__ = ["check", "demo"]
