"""The answer key: every case's inputs, the reference outputs and the known mistakes' outputs.

Computed from solutions/ (never typed in by hand): the solution notebook is
executed in a sandbox exactly as a student's would be, and each case runs on
the reference object and on every `Mistake` of the item. The full key is
cached under `.cache/keys/`, keyed by everything it depends on; the public part
(public cases only, quiz answers removed) is written by `build` to
`autograder/public/<notebook>.agw` and ships with the student release.
"""
from __future__ import annotations

import ast
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


def earlier_references(course: Course, nb: Notebook, root: Path = ROOT) -> dict[str, dict]:
    """The references of the earlier notebooks that the solution imports from (`from autograder.earlier import`)."""
    from . import earlier

    return earlier.needed(course, nb, earlier.imported_names(c["source"] for c in solution_cells(nb, root)), root)


def _earlier_part(course: Course, nb: Notebook, root: Path, package: Path) -> bytes:
    """What the key owes to earlier notebooks: their reference code that the solution imports, and how it runs."""
    references = earlier_references(course, nb, root)
    if not references:
        return b""
    return (package / "earlier.py").read_bytes() + "".join(r["source"] for r in references.values()).encode()


def key_digest(course: Course, nb: Notebook, root: Path = ROOT) -> str:
    """A digest of everything the key depends on (read from the files: nothing is imported)."""
    package = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for part in (
        (root / "solutions" / nb.path).read_bytes(),
        (package / "exercises" / f"{nb.id}.py").read_bytes(),
        *(path.read_bytes() for path in hidden_files(package / "hidden" / f"{nb.id}.py")),
        (package / "exercise.py").read_bytes(),
        (package / "sandbox.py").read_bytes(),  # how cases are run (seeds, forks) shapes the outputs
        f"{course.grading.public_seed}:{course.grading.hidden_seed}".encode(),
        _versions().encode(),
        _earlier_part(course, nb, root, package),
    ):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:20]


def hidden_files(path: Path) -> list[Path]:
    """A hidden module and the hidden library modules it imports (`from .transformer_mistakes import ...`),
    transitively, read with `ast` (nothing is imported)."""
    found, todo = [], [Path(path)]
    while todo:
        current = todo.pop()
        if current in found or not current.is_file():
            continue
        found.append(current)
        for node in ast.walk(ast.parse(current.read_bytes(), str(current))):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            if node.level == 1:  # from .library import ...
                name = node.module
            elif node.level == 2 and node.module.startswith("hidden."):  # from ..hidden.library import ...
                name = node.module[len("hidden."):]
            else:
                continue
            todo.append(current.parent / f"{name.replace('.', '/')}.py")
    return found


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
    job = {"cells": solution_cells(nb, root), "skip": [], "items": items, "limits": limits_dict(course),
           "earlier": earlier_references(course, nb, root)}
    result = run(job)
    if "fatal" in result:
        raise ReferenceError_(f"{nb.id}: the grader failed on the reference: {result['fatal']}")
    for index, cell in result["cells"].items():
        if cell["status"] != "ok":
            raise ReferenceError_(f"solutions/{nb.path}: cell {index} failed: {cell['error']}")
    key = {}
    for item in nb.auto_items:
        ref = result["items"][item.id]
        if ref["status"] == "missing":
            raise ReferenceError_(f"solutions/{nb.path}: no cell defines {item.id}; its solution cell "
                                  f"(grade_id {item.id}) should")
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


KEY_RTOL = {"float64": 1e-12, "complex128": 1e-12, "float32": 1e-5, "complex64": 1e-5, "float16": 4e-3}
"""How far a stored key's floats may be from a fresh computation and still be the same key, by dtype.

Floats differ in their last bits between machines (BLAS blocking, SIMD exp/log,
summation order), so two computations of one key agree only up to rounding.
Within an array the tolerance is relative to the array's largest entry
(|a - b| <= rtol * max(|a|, |b|) over the array), since a different summation order moves an
entry near zero by the rounding of the largest terms, not of the entry itself.
float64 values that are all float32 numbers, not all whole (a float32 result cast up, such as
`loss.item()`), get the float32 tolerance.
Everything else (structure, names, strings, integers, dtypes, shapes, which
entries are nan or inf) must be equal."""


def key_differences(a, b, where: str = "key", limit: int = 10) -> list[str]:
    """Where two keys differ beyond rounding (empty when they are the same key; see KEY_RTOL)."""
    out: list[str] = []
    _differences(a, b, where, out, limit)
    return out


def same_key(a, b) -> bool:
    """Do two keys (e.g. the committed public key and a fresh one) agree up to rounding?"""
    return not key_differences(a, b, limit=1)


def _rtol(dtype: str, *arrays: np.ndarray) -> float:
    if dtype == "float64" and _cast_up_float32(*arrays):
        return KEY_RTOL["float32"]
    return KEY_RTOL[dtype]


def _cast_up_float32(*arrays: np.ndarray) -> bool:
    """Are these (finite) float64 values float32 results cast up? Whole numbers are not taken as such."""
    if all(np.array_equal(x, np.round(x)) for x in arrays):
        return False
    with np.errstate(over="ignore"):
        return all(np.array_equal(x.astype(np.float32).astype(np.float64), x) for x in arrays)


def _close_arrays(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind not in "fc":
        return np.array_equal(a, b)
    finite_a, finite_b = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(finite_a, finite_b):
        return False
    if not np.array_equal(a[~finite_a], b[~finite_b], equal_nan=True):
        return False
    a, b = a[finite_a], b[finite_b]
    if a.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))))
        tiny = float(np.finfo(a.dtype).tiny)  # all-zero arrays: a denormal apart is still rounding
        return bool(np.all(np.abs(a - b) <= _rtol(str(a.dtype), a, b) * scale + tiny))


def _differences(a, b, where: str, out: list[str], limit: int) -> None:
    if len(out) >= limit:
        return
    if type(a) is not type(b) and not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        out.append(f"{where}: {type(a).__name__} != {type(b).__name__}")
    elif isinstance(a, wire.Tensor):
        if a.requires_grad != b.requires_grad:
            out.append(f"{where}: requires_grad {a.requires_grad} != {b.requires_grad}")
        else:
            _differences(a.array, b.array, where, out, limit)
    elif isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            out.append(f"{where}: {a.dtype}{list(a.shape)} != {b.dtype}{list(b.shape)}")
        elif str(a.dtype) in KEY_RTOL or a.dtype.kind not in "fc":
            if not _close_arrays(a, b):
                out.append(f"{where}: values differ beyond rounding")
        elif not np.array_equal(a, b, equal_nan=True):
            out.append(f"{where}: values differ")
    elif isinstance(a, dict):
        if list(a) != list(b):
            out.append(f"{where}: keys {list(a)} != {list(b)}"[:300])
        for k in a:
            if k in b:
                _differences(a[k], b[k], f"{where}.{k}", out, limit)
    elif isinstance(a, list):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} entries != {len(b)}")
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                _differences(x, y, f"{where}[{i}]", out, limit)
    elif isinstance(a, float):
        if not _close_arrays(np.array([a]), np.array([b])):
            out.append(f"{where}: {a!r} != {b!r}")
    elif a != b:
        out.append(f"{where}: {a!r} != {b!r}"[:200])


def load_public(notebook_id: str) -> dict:
    """The public key shipped with the release (public cases and their expected outputs)."""
    path = public_path(notebook_id)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run python -m autograder build")
    return wire.decode(path.read_bytes())
