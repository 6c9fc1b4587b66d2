"""The answer key: every case's inputs, the reference outputs and the known mistakes' outputs.

Computed from solutions/ (never typed in by hand): the solution notebook is
executed in a sandbox exactly as a student's would be, and each case runs on
the reference object and on every `Mistake` of the item. The full key is
cached under `.cache/keys/`, keyed by everything it depends on; the public part
(public cases only, quiz answers removed) is written by `build` to
`autograder/public/<notebook>.agw` and ships with the student release.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from . import notebook, wire
from .config import ROOT, Course, Notebook
from .exercise import exercise_module, exercises, hidden_module

PUBLIC_DIR = ROOT / "autograder" / "public"
CACHE_DIR = ROOT / ".cache" / "keys"

Runner = Callable[[dict], dict]


class ReferenceError_(RuntimeError):
    """The reference solution failed on a case: a bug in the course, not in a submission."""


def item_rng(seed: int, item_id: str) -> np.random.Generator:
    """A generator for one item's cases, stable when other items are added or removed."""
    return np.random.default_rng([seed, zlib.crc32(item_id.encode())])


def build_cases(course: Course, nb: Notebook) -> dict[str, list[dict]]:
    """All cases of the notebook's auto-graded items, public first, as plain dicts."""
    exs, hidden = exercises(nb.id), hidden_module(nb.id)
    out = {}
    for item in nb.auto_items:
        ex = exs[item.id]
        public = ex.public_cases(item_rng(course.grading.public_seed, item.id))
        secret = hidden.HIDDEN_CASES[item.id](item_rng(course.grading.hidden_seed, item.id))
        cases = [dict(_case_dict(c), public=True) for c in public]
        cases += [dict(_case_dict(c), public=False) for c in secret]
        if ex.kind == "quiz":
            for c in cases:
                c["public"] = False  # the answer itself is never public
        names = [c["name"] for c in cases]
        if len(set(names)) != len(names):
            raise ReferenceError_(f"{nb.id}: item {item.id} has two cases with the same name")
        out[item.id] = cases
    return out


def _case_dict(case) -> dict:
    d = asdict(case)
    d["tolerance"] = list(case.tolerance) if case.tolerance else None
    return d


def limits_dict(course: Course) -> dict:
    limits = asdict(course.grading.limits)
    limits["cpu_seconds"] = limits["notebook_seconds"] + 10 * limits["item_seconds"]
    return limits


def solution_cells(nb: Notebook, root: Path = ROOT) -> list[dict]:
    source = notebook.read(root / "solutions" / nb.path)
    return [{"index": c.index, "source": c.source} for c in notebook.cells_to_run(source, None)]


def solution_sources(nb: Notebook, root: Path = ROOT) -> dict[str, str]:
    """Source of each solution cell, by grade_id (used to inject reference pieces)."""
    source = notebook.read(root / "solutions" / nb.path)
    return {
        notebook.nbgrader_meta(c)["grade_id"]: c["source"]
        for c in source.cells
        if c.get("cell_type") == "code" and notebook.nbgrader_meta(c).get("solution")
    }


def key_digest(course: Course, nb: Notebook, root: Path = ROOT) -> str:
    """A digest of everything the key depends on (read from the files: nothing is imported)."""
    package = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for part in (
        (root / "solutions" / nb.path).read_bytes(),
        (package / "exercises" / f"{nb.id}.py").read_bytes(),
        (package / "hidden" / f"{nb.id}.py").read_bytes(),
        (package / "exercise.py").read_bytes(),
        f"{course.grading.public_seed}:{course.grading.hidden_seed}".encode(),
        _versions().encode(),
    ):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:20]


@functools.cache
def _versions() -> str:
    return f"torch {importlib.metadata.version('torch')}, numpy {importlib.metadata.version('numpy')}"


def compute_key(course: Course, nb: Notebook, run: Runner, root: Path = ROOT) -> dict:
    """Run the solution notebook and every mistake on every case; return the answer key."""
    cases = build_cases(course, nb)
    exs, hidden = exercises(nb.id), hidden_module(nb.id)
    items = []
    for item in nb.auto_items:
        items.append({"key": item.id, "id": item.id, "notebook": nb.id, "cases": cases[item.id]})
        for m in hidden.MISTAKES.get(item.id, []):
            items.append({"key": f"{item.id}:{m.name}", "id": item.id, "notebook": nb.id,
                          "cases": cases[item.id], "variant": m.name})
    job = {"cells": solution_cells(nb, root), "skip": [], "items": items, "limits": limits_dict(course), "hide": []}
    result = run(job)
    if "fatal" in result:
        raise ReferenceError_(f"{nb.id}: the grader failed on the reference: {result['fatal']}")
    for index, cell in result["cells"].items():
        if cell["status"] != "ok":
            raise ReferenceError_(f"solutions/{nb.path}: cell {index} failed: {cell['error']}")
    key = {}
    for item in nb.auto_items:
        ref = result["items"][item.id]
        if ref["status"] != "done":
            raise ReferenceError_(f"solutions/{nb.path}: item {item.id} {ref['status']}: {ref['error']}")
        ex = exs[item.id]
        case_keys = []
        for case in cases[item.id]:
            got = ref["cases"].get(case["name"])
            if got is None or got["error"]:
                raise ReferenceError_(
                    f"solutions/{nb.path}: reference {item.id} fails on case {case['name']}: "
                    f"{got['error'] if got else 'no result'}"
                )
            case_keys.append(dict(case, expected=got["outputs"], mistakes={}))
        mistakes = []
        for m in hidden.MISTAKES.get(item.id, []):
            res = result["items"][f"{item.id}:{m.name}"]
            mistakes.append({"name": m.name, "title": m.title, "hint": m.hint})
            for ck in case_keys:
                got = res["cases"].get(ck["name"])
                if got is None:
                    continue
                ck["mistakes"][m.name] = {"$error": got["error_type"]} if got["error"] else got["outputs"]
        key[item.id] = {"kind": ex.kind, "choices": list(ex.choices), "cases": case_keys, "mistakes": mistakes}
    return key


def public_part(key: dict) -> dict:
    """The part of a key students may have: public cases with their expected outputs."""
    out = {}
    for item_id, item in key.items():
        cases = [c for c in item["cases"] if c["public"]]
        if item["kind"] == "quiz":
            # Students may check the form of their answer, never whether it is right.
            cases = [dict(c, expected=None, mistakes={}, public=True) for c in item["cases"]]
        out[item_id] = dict(item, cases=cases)
    return out


def load_key(course: Course, nb: Notebook, run: Runner | None, root: Path = ROOT) -> dict:
    """The full answer key, from the cache when nothing it depends on has changed."""
    path = root / ".cache" / "keys" / f"{nb.id}-{key_digest(course, nb, root)}.agw"
    if path.exists():
        return wire.decode(path.read_bytes())
    if run is None:
        raise ReferenceError_(f"no answer key for {nb.id}; it is computed when grading")
    key = compute_key(course, nb, run, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(wire.encode(key))
    tmp.replace(path)
    return key


def public_path(notebook_id: str) -> Path:
    return PUBLIC_DIR / f"{notebook_id}.agw"


def load_public(notebook_id: str) -> dict:
    """The public key shipped with the release (public cases and their expected outputs)."""
    path = public_path(notebook_id)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run python -m autograder build")
    return wire.decode(path.read_bytes())
