"""The build: weeks/ and the public keys are exactly what solutions/ produce."""
from __future__ import annotations

import nbformat
import numpy as np
import pytest

from autograder import build, reference, wire
from autograder.config import ROOT, load_course

NOTEBOOKS = load_course().notebooks


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_weeks_are_fresh(nb):
    """Does the committed student notebook equal a fresh build from solutions/?"""
    committed = (ROOT / "weeks" / nb.path).read_text(encoding="utf-8")
    assert committed == build.release_text(nb), f"weeks/{nb.path} is stale: run python -m autograder build"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_release_hides_solutions(nb):
    """Does the student notebook keep every stub and drop every solution and hidden test?"""
    text = (ROOT / "weeks" / nb.path).read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
    released = {build_cell_id(c): c for c in nbformat.reads(text, as_version=4).cells}
    source = nbformat.read(ROOT / "solutions" / nb.path, as_version=4)
    for cell in source.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in {i.id for i in nb.auto_items}:
            stub = released[gid].source
            if build.has_answer_placeholder(cell):  # an answer cell: its placeholder line(s), which do not raise
                assert stub == cell.source.split("### BEGIN SOLUTION")[0].rstrip(), gid
                namespace: dict = {}
                exec(stub, namespace)
                assert gid in namespace, gid
            else:
                assert "raise NotImplementedError()" in stub, gid


def build_cell_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def test_release_steps_are_nbgraders_own():
    """Do `build` and nbgrader_config.py run generate_assignment's steps in nbgrader's order, with only
    ClearSolutions replaced by the course's (and build without the steps that need nbgrader's database)?"""
    from nbgrader.converters import GenerateAssignment
    from nbgrader.preprocessors import ClearSolutions as Stock
    from traitlets.config import PyFileConfigLoader

    stock = GenerateAssignment.class_traits()["preprocessors"].default()
    config = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    configured = list(config.GenerateAssignment.preprocessors)
    assert configured == [build.ClearSolutions if step is Stock else step for step in stock]
    skipped = {"IncludeHeaderFooter", "InstantiateTests", "SaveCells"}
    assert build.RELEASE_STEPS == [s for s in configured if s.__name__ not in skipped]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_public_keys_are_fresh(course, keys, nb):
    """Does the shipped public key equal one computed now from solutions/, up to rounding (reference.KEY_RTOL)?"""
    committed = reference.load_public(nb.id)
    differences = reference.key_differences(committed, reference.public_part(keys[nb.id]), nb.id)
    assert not differences, f"stale public key (run python -m autograder build {nb.id}): {differences}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_public_key_holds_no_secrets(keys, nb):
    """Does the public key leave out hidden cases and quiz answers?"""
    public = reference.load_public(nb.id)
    for item_id, item in public.items():
        assert all(c["public"] for c in item["cases"])
        if item["kind"] == "quiz":
            assert all(c["expected"] is None for c in item["cases"])
        hidden_names = {c["name"] for c in keys[nb.id][item_id]["cases"] if not c["public"]}
        assert not hidden_names & {c["name"] for c in item["cases"]} or item["kind"] == "quiz"


# --- keys are the same on every machine: rounding is not a change -------------------------------

def _map_floats(value, fn):
    """`value` (a decoded key) with fn applied to every float array and float."""
    if isinstance(value, wire.Tensor):
        return wire.Tensor(_map_floats(value.array, fn), value.requires_grad)
    if isinstance(value, np.ndarray):
        return fn(value) if value.dtype.kind == "f" else value
    if isinstance(value, dict):
        return {k: _map_floats(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_floats(v, fn) for v in value]
    if isinstance(value, float):
        return float(fn(np.array([value]))[0])
    return value


def one_ulp_up(x: np.ndarray) -> np.ndarray:
    """Every finite entry moved to the next representable number of its own dtype."""
    return np.where(np.isfinite(x), np.nextafter(x, np.array(np.inf, dtype=x.dtype)), x).astype(x.dtype)


def _first(key, predicate, path=()):
    """The path of the first float array in `key` for which predicate holds."""
    if isinstance(key, wire.Tensor):
        key = key.array
    if isinstance(key, np.ndarray):
        return path if key.dtype.kind == "f" and predicate(key) else None
    children = key.items() if isinstance(key, dict) else enumerate(key) if isinstance(key, list) else ()
    for k, v in children:
        found = _first(v, predicate, path + (k,))
        if found is not None:
            return found
    return None


def _replace_at(key, path, fn):
    import copy

    key = copy.deepcopy(key)
    parent = key
    for k in path[:-1]:
        parent = parent[k]
    leaf = parent[path[-1]]
    if isinstance(leaf, wire.Tensor):
        parent[path[-1]] = wire.Tensor(fn(leaf.array), leaf.requires_grad)
    else:
        parent[path[-1]] = fn(leaf)
    return key


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_one_ulp_is_the_same_key(nb):
    """Is a committed key whose every float moved by one ULP (another CPU's rounding) still the same key?"""
    committed = reference.load_public(nb.id)
    moved = _map_floats(committed, one_ulp_up)
    assert wire.encode(moved) != wire.encode(committed)  # the bytes do differ, as they did on a clean clone
    assert reference.key_differences(committed, moved) == []
    assert reference.same_key(moved, committed)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_real_changes_are_stale(nb):
    """Is a value off by 1e-3, or a renamed case, or a float64 array turned float32, still told apart from the key?"""
    committed = reference.load_public(nb.id)
    path = _first(committed, lambda a: a.dtype == np.float64 and np.isfinite(a).any() and np.abs(a).max() > 0)
    assert path is not None
    off = _replace_at(committed, path, lambda a: np.where(np.isfinite(a), a + 1e-3 * np.abs(a).max(), a))
    assert reference.key_differences(committed, off), "a value off by 1e-3 passed for rounding"
    assert not reference.same_key(off, committed)

    retyped = _replace_at(committed, path, lambda a: a.astype(np.float32))
    assert any("float32" in d for d in reference.key_differences(committed, retyped))

    item_id = next(iter(committed))
    renamed = _replace_at(committed, (item_id, "cases", 0, "name"), lambda name: name + "-renamed")
    differences = reference.key_differences(committed, renamed)
    assert differences and "renamed" in differences[0]


def test_rounding_rules():
    """Does the tolerance follow the dtype: rounding passes, a few parts per million fail in float64 but not float32?"""
    x = np.linspace(-3, 5, 50)
    assert reference.same_key(x, x * (1 + 1e-14))
    assert not reference.same_key(x, x * (1 + 1e-9))
    assert reference.same_key(x.astype(np.float32), (x * (1 + 1e-7)).astype(np.float32))
    assert not reference.same_key(x.astype(np.float32), (x * (1 + 1e-3)).astype(np.float32))
    assert not reference.same_key(np.array([1.0, np.nan]), np.array([1.0, 1.0]))  # where the nans are is exact
    assert not reference.same_key(np.arange(3), np.arange(3) + 1)  # integers are exact
    assert not reference.same_key(1234567.0, 1234568.0)  # whole numbers are not taken for float32 results
    loss = float(np.float32(0.6931472))
    assert reference.same_key(loss, float(np.nextafter(np.float32(loss), np.float32(1))))  # loss.item() of float32
    assert reference.same_key(np.zeros(4), one_ulp_up(np.zeros(4)))


def test_build_leaves_a_key_within_rounding_untouched(tmp_path, monkeypatch, course):
    """Does `build` keep a stored key that differs from a fresh one by rounding, and rewrite one that really changed?"""
    from autograder import worker

    nb = course.notebooks[0]
    for folder in ("solutions", "weeks"):
        (tmp_path / folder / nb.week).mkdir(parents=True)
        (tmp_path / folder / nb.path).write_bytes((ROOT / folder / nb.path).read_bytes())
    public = tmp_path / "public"
    public.mkdir()
    monkeypatch.setattr(reference, "PUBLIC_DIR", public)
    monkeypatch.setattr(worker, "preload", lambda: None)
    fresh = (ROOT / "autograder" / "public" / f"{nb.id}.agw").read_bytes()
    monkeypatch.setattr(build, "public_text", lambda *a, **k: fresh)  # what this machine computes

    other_machine = wire.encode(_map_floats(wire.decode(fresh), one_ulp_up))
    stored = public / f"{nb.id}.agw"
    stored.write_bytes(other_machine)
    assert build.build(course, root=tmp_path, only=[nb.id], log=lambda *_: None) == []
    assert stored.read_bytes() == other_machine, "a key within rounding was rewritten"

    key = wire.decode(fresh)
    path = _first(key, lambda a: a.dtype == np.float64 and np.abs(a).max() > 0)
    stale = wire.encode(_replace_at(key, path, lambda a: a + 1e-3 * np.abs(a).max()))
    stored.write_bytes(stale)
    assert build.build(course, root=tmp_path, only=[nb.id], log=lambda *_: None) == [stored]
    assert stored.read_bytes() == fresh
