"""Build the student notebooks (weeks/) and the public answer keys from solutions/.

The student notebook is made by nbgrader's own preprocessors, in the order
`nbgrader generate_assignment` applies them (without its database), so the
repository stays a valid nbgrader course and the two builds agree. The public
keys (`autograder/public/<notebook>.agw`) hold the public cases, their expected
outputs and the known mistakes' outputs, computed from the solutions.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbgrader.preprocessors import CheckCellMetadata, ClearHiddenTests, ClearMarkScheme, ClearOutput, ComputeChecksums, LockCells
from nbgrader.preprocessors import ClearSolutions as NbgraderClearSolutions

from . import compare, reference, source, wire
from .config import ROOT, ConfigError, Course, Notebook

class ClearSolutions(NbgraderClearSolutions):
    """nbgrader's ClearSolutions, except for an answer cell that already gives its answer a placeholder.

    A quiz-like item's answer is a module-level variable (`quiz_sqrt_dk = "B"`). nbgrader's one code
    stub, `raise NotImplementedError()`, is right inside a function but, at the top of an answer cell,
    it stops "Run All" there. So when the code above a cell's solution region already assigns the
    cell's grade_id (`quiz_sqrt_dk = None  # your answer: ...`), that line is the stub: the region is
    removed and nothing is put in its place. Every other cell gets nbgrader's stub as usual.

    nbgrader_config.py puts this class in GenerateAssignment's preprocessors, so that `nbgrader
    generate_assignment` and `python -m autograder build` write the same weeks/ (a test compares them).
    """

    _REMOVED = "\x00answer-region\x00"

    def _replace_solution_region(self, cell, language: str) -> bool:
        if not has_answer_placeholder(cell, self.begin_solution_delimeter):
            return super()._replace_solution_region(cell, language)
        stubs = self.code_stub
        self.code_stub = {**stubs, language: self._REMOVED}
        try:
            replaced = super()._replace_solution_region(cell, language)
        finally:
            self.code_stub = stubs
        cell.source = "\n".join(line for line in cell.source.split("\n") if line.strip() != self._REMOVED).rstrip()
        return replaced


def has_answer_placeholder(cell, begin: str = "BEGIN SOLUTION") -> bool:
    """Does a code solution cell assign its own grade_id (at the top level) above its first solution region?"""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    gid = meta.get("grade_id")
    if cell.get("cell_type") != "code" or not meta.get("solution") or not isinstance(gid, str):
        return False
    above = cell.source.split(begin, 1)[0] if begin in cell.source else ""
    return re.search(rf"^{re.escape(gid)}\s*(:[^=\n]*)?=", above, re.M) is not None


# generate_assignment's order, less IncludeHeaderFooter/InstantiateTests (unused) and SaveCells (its database).
# ClearHiddenTests must follow the first ComputeChecksums; ComputeChecksums runs again after it.
RELEASE_STEPS = [
    LockCells, ClearSolutions, ClearOutput, CheckCellMetadata, ComputeChecksums,
    ClearHiddenTests, ClearMarkScheme, ComputeChecksums, CheckCellMetadata,
]


def release_notebook(src: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student's version of a source notebook."""
    nb = nbformat.from_dict(src)
    resources: dict = {}
    for step in RELEASE_STEPS:
        nb, resources = step().preprocess(nb, resources)
    return nb


def release_text(course_nb: Notebook, root: Path = ROOT) -> str:
    src = nbformat.read(root / "solutions" / course_nb.path, as_version=4)
    return source.dumps(release_notebook(src))


class BuildError(ConfigError):
    """A course whose answer key cannot grade: an item without cases, or a catalogued mistake that the
    reference gives the same outputs as on every case (so a correct student would be told they made it)."""


def public_text(course: Course, nb: Notebook, run, root: Path = ROOT) -> bytes:
    """The notebook's public key, from its full answer key (BuildError when that key cannot grade)."""
    key = reference.load_key(course, nb, run, root)
    problems = key_problems(nb, key)
    if problems:
        raise BuildError("\n".join(problems))
    return wire.encode(reference.public_part(key))


def key_problems(nb: Notebook, key: dict) -> list[str]:
    """What makes an answer key unfit to grade with, one line each: an item without any case, and a mistake of
    MISTAKES whose outputs pass every case (the reference's own outputs, up to the case's tolerance)."""
    exercise, hidden = f"autograder/exercises/{nb.id}.py", f"autograder/hidden/{nb.id}.py"
    problems = []
    for item_id, item in key.items():
        if not item["cases"]:
            problems.append(f"{exercise}, {hidden}: item {item_id!r} of {nb.id} has no cases; give it public cases "
                            "(its Exercise in EXERCISES) or hidden cases (HIDDEN_CASES), or nothing can grade it")
            continue
        for mistake in item["mistakes"]:
            if not any(compare.mistake_fails(case, mistake["name"]) for case in item["cases"]):
                problems.append(f"{hidden}: mistake {mistake['name']!r} of item {item_id!r} gives the reference's "
                                "outputs on every case: the solution changed, or the mistake no longer differs; "
                                "fix or remove it")
    return problems


def public_is_current(path: Path, data: bytes) -> bool:
    """Does the stored public key at `path` equal `data` (a fresh one) up to rounding?

    The same solutions give keys that differ in the last bits of some floats
    from one machine to another; such a key is up to date and stays untouched
    (see reference.KEY_RTOL), so a build on a clean clone changes nothing.
    """
    if not path.exists():
        return False
    stored = path.read_bytes()
    if stored == data:
        return True
    try:
        old = wire.decode(stored)
    except wire.WireError:
        return False
    return reference.same_key(old, wire.decode(data))


def build(course: Course, root: Path = ROOT, only: list[str] | None = None, log=print) -> list[Path]:
    """Write weeks/ and autograder/public/; returns the files that changed."""
    from .worker import preload, run_job

    stale = source.stale_sources(course, root, only)
    if stale:
        raise source.SourceError("\n".join(stale))
    preload()
    outputs, problems = {}, []
    for nb in course.notebooks:  # every key first: nothing is written when one of them cannot grade
        if only and nb.id not in only:
            continue
        try:
            public = public_text(course, nb, run_job, root)
        except BuildError as exc:
            problems += str(exc).splitlines()
            continue
        outputs[root / "weeks" / nb.path] = release_text(nb, root).encode()
        outputs[reference.public_path(nb.id)] = public
    if len(problems) == 1:
        raise BuildError(problems[0])
    if problems:
        raise BuildError(f"the answer keys cannot grade ({len(problems)} problems):\n  " + "\n  ".join(problems))
    changed = []
    for path, data in outputs.items():
        if path.suffix == ".agw" and public_is_current(path, data):
            continue
        if not path.exists() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            changed.append(path)
            log(f"wrote {path.relative_to(root)}")
    return changed
