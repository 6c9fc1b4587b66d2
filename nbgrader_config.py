"""nbgrader's configuration for this repository: it is also a working nbgrader course.

Run nbgrader from the repository's folder (the one holding this file):

    nbgrader generate_assignment week1 --force   # solutions/week1 -> weeks/week1 (equal to `python -m autograder build`)
    nbgrader autograde week1 --create            # grades submitted/<student>/week1 in a Jupyter kernel

An nbgrader assignment is a week of course.yml; its notebooks are the week's
notebooks. The hidden-test regions of the test cells run the hidden cases
(`autograder.hidden_tests`), so `nbgrader autograde` and `python -m autograder
grade` agree on which items pass (see README.md, "Working with nbgrader...").
"""
import os

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

here = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.root = here
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "weeks"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
# nbgrader's own database (assignments, students, nbgrader's grades); the course's gradebook is separate.
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(here, "gradebook.db")

# generate_assignment's own steps, with the course's ClearSolutions (autograder/build.py): an answer cell
# that assigns its answer a placeholder above the solution (`quiz_sqrt_dk = None  # ...`) keeps that line as
# its stub instead of `raise NotImplementedError()`, so that "Run All" goes past an unanswered quiz.
from autograder.build import ClearSolutions  # noqa: E402 - nbgrader loads this file with the course installed
from nbgrader.preprocessors import (  # noqa: E402
    CheckCellMetadata, ClearHiddenTests, ClearMarkScheme, ClearOutput, ComputeChecksums, IncludeHeaderFooter,
    InstantiateTests, LockCells, SaveCells,
)

c.GenerateAssignment.preprocessors = [
    IncludeHeaderFooter, InstantiateTests, LockCells, ClearSolutions, ClearOutput, CheckCellMetadata,
    ComputeChecksums, SaveCells, ClearHiddenTests, ClearMarkScheme, ComputeChecksums, CheckCellMetadata,
]

# Notebooks are executed by the kernel of this project's interpreter (`make` installs it into .venv);
# ATTENTION_KERNEL names another kernelspec.
c.ExecutePreprocessor.kernel_name = os.environ.get("ATTENTION_KERNEL", "attention-course")
c.ExecutePreprocessor.timeout = 300

# The zip_collect file-name pattern (nbgrader's documented example); `python -m autograder import nbgrader`
# uses the same pattern by default.
c.FileNameCollectorPlugin.named_regexp = (
    r".*_(?P<student_id>\w+)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>\w+)"
)
