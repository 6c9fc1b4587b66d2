"""The build: weeks/ and the public keys are exactly what solutions/ produce."""
from __future__ import annotations

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
    assert text.count("raise NotImplementedError()") >= len([i for i in nb.auto_items if i.id[0].islower() and not i.id.startswith("quiz")])


def _assert_same(a, b, where="key"):
    if isinstance(a, wire.Tensor) or isinstance(a, np.ndarray):
        a_arr = a.array if isinstance(a, wire.Tensor) else a
        b_arr = b.array if isinstance(b, wire.Tensor) else b
        assert type(a) is type(b) and a_arr.dtype == b_arr.dtype and a_arr.shape == b_arr.shape, where
        if a_arr.dtype.kind in "fc":
            np.testing.assert_allclose(a_arr, b_arr, rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=where)
        else:
            np.testing.assert_array_equal(a_arr, b_arr, err_msg=where)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_public_keys_are_fresh(course, keys, nb):
    """Does the shipped public key equal one computed now from solutions/ (the one regeneration command)?"""
    committed = reference.load_public(nb.id)
    _assert_same(committed, reference.public_part(keys[nb.id]), nb.id)


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
