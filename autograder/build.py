"""Build the student notebooks (weeks/) and the public answer keys from solutions/.

The student notebook is made by nbgrader's own preprocessors, in the order
`nbgrader generate_assignment` applies them (without its database), so the
repository stays a valid nbgrader course and the two builds agree. The public
keys (`autograder/public/<notebook>.agw`) hold the public cases, their expected
outputs and the known mistakes' outputs, computed from the solutions.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbgrader.preprocessors import (
    CheckCellMetadata, ClearHiddenTests, ClearMarkScheme, ClearOutput, ClearSolutions, ComputeChecksums, LockCells,
)

from . import compare, reference, source, wire
from .config import ROOT, ConfigError, Course, Notebook

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
