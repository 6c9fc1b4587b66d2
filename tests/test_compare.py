"""Comparison and diagnosis: what fails, how it is described, and which mistake is named."""
from __future__ import annotations

import numpy as np
import pytest

from autograder import compare
from autograder.config import load_course
from autograder.wire import Tensor

NOTEBOOKS = load_course().notebooks


def t(x, dtype="float64"):
    return Tensor(np.asarray(x, dtype=dtype))


def test_equal_within_tolerance_passes():
    """Does a float32 result within float32 tolerance pass?"""
    assert compare.compare_value("out", t([1.0, 2.0], "float32"), t([1.0 + 1e-6, 2.0], "float32")) == []


def test_problem_lines_name_shape_dtype_nan_and_difference():
    """Does a failure report shape, dtype, NaN count and the largest difference, each by output name?"""
    assert "shape [3], expected [2]" in compare.compare_value("w", t([1, 2]), t([1, 2, 3]))[0]
    dtype = compare.compare_value("w", t([1, 2]), t([1, 2], "float32"))
    assert any("dtype float32, expected float64" in p and "keep the input dtype" in p for p in dtype)
    nan = compare.compare_value("w", t([1, 2]), t([np.nan, 2]))
    assert any("1 NaN values, expected 0" in p for p in nan)
    diff = compare.compare_value("w", t([1, 2]), t([1, 2.5]))
    assert any("largest difference 0.5" in p for p in diff)


def test_numpy_where_tensor_expected_is_named():
    """Is returning a numpy array where a tensor is expected explained?"""
    assert "expected a torch tensor" in compare.compare_value("o", t([1.0]), np.array([1.0]))[0]


def test_ints_are_exact_and_typed():
    """Is an int result compared exactly, and a float where an int is expected refused?"""
    assert compare.compare_value("n", 12, 12) == []
    assert compare.compare_value("n", 12, 13)
    assert "expected an int" in compare.compare_value("n", 12, 12.0)[0]


def test_mistake_is_named_and_nan_is_a_wildcard():
    """Is a mistake named when the outputs match it, even where the student zeroed its NaN rows?"""
    key = {"name": "c", "public": True, "expected": {"w": t([[0.5, 0.5], [0.0, 0.0]])},
           "mistakes": {"m": {"w": t([[1.0, 0.0], [np.nan, np.nan]])}}}
    mistakes = [{"name": "m", "title": "a known slip", "hint": "fix it"}]
    got = {"outputs": {"w": t([[1.0, 0.0], [0.0, 0.0]])}, "error": "", "error_type": ""}
    result = compare.judge_case("x", key, got, mistakes, 1.0)
    assert not result.passed and result.mistake["name"] == "m"
    assert "Likely mistake: a known slip" in result.text()


def test_error_mistake_needs_consistent_behaviour():
    """Is an error-type mistake dropped when the student also fails where that mistake works?"""
    ik = {"kind": "function", "choices": [], "mistakes": [{"name": "T", "title": "t", "hint": "h"}], "cases": [
        {"name": "2d", "public": True, "expected": {"o": t([1.0])}, "mistakes": {"T": {"o": t([1.0])}}},
        {"name": "3d", "public": True, "expected": {"o": t([2.0])}, "mistakes": {"T": {"$error": "RuntimeError"}}},
    ]}
    err = {"outputs": None, "error": "RuntimeError: boom", "error_type": "RuntimeError"}
    fails_both = compare.judge_item("x", ik, {"2d": err, "3d": err}, 0.5)
    assert fails_both[1].mistake is None
    fails_batched = compare.judge_item("x", ik, {"2d": {"outputs": {"o": t([1.0])}, "error": ""}, "3d": err}, 0.5)
    assert fails_batched[1].mistake["name"] == "T" and fails_batched[0].passed


def _as_student(case, outputs):
    if "$error" in outputs:
        return {"outputs": None, "error": f"{outputs['$error']}: from the mistake", "error_type": outputs["$error"]}
    return {"outputs": outputs, "error": "", "error_type": ""}


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_every_known_mistake_loses_points_and_is_named(keys, nb):
    """For every pitfall of every item: does a student making it lose points, with it named, publicly too
    (except on a quiz, whose public case checks only the answer's form)?

    The student's outputs are the mistake implementation's real outputs on every case.
    """
    key = keys[nb.id]
    for item in nb.auto_items:
        ik = key[item.id]
        for m in ik["mistakes"]:
            raw = {c["name"]: _as_student(c, c["mistakes"][m["name"]]) for c in ik["cases"] if m["name"] in c["mistakes"]}
            results = compare.judge_item(item.id, ik, raw, item.points / len(ik["cases"]))
            assert sum(r.score for r in results) < item.points - 1e-9, f"{item.id}/{m['name']} loses no points"
            named = [r for r in results if r.mistake and r.mistake["name"] == m["name"]]
            assert named, f"{item.id}/{m['name']} is never named (another mistake behaves identically?)"
            if ik["kind"] != "quiz":  # a quiz's public case checks only the answer's form
                assert any(r.public for r in named), f"{item.id}/{m['name']} is not named on any public case"
            assert any(not r.public for r in named), f"{item.id}/{m['name']} is not named on any hidden case"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_reference_passes_its_own_key(keys, nb):
    """Does the reference, judged like a student, pass every case (so the tolerances are sane)?"""
    for item in nb.auto_items:
        ik = keys[nb.id][item.id]
        raw = {c["name"]: {"outputs": c["expected"], "error": ""} for c in ik["cases"]}
        assert all(r.passed for r in compare.judge_item(item.id, ik, raw, 1.0))


def test_dict_quiz_without_choices():
    """Is a dict-valued quiz (no letter choices) judged by equality, and its public check by form only?"""
    expected = {"translation": "encoder-decoder", "classification": "encoder-only"}
    key = {"name": "answer", "public": False, "expected": {"answer": expected}, "mistakes": {}}
    right = {"outputs": {"answer": dict(expected)}, "error": ""}
    wrong = {"outputs": {"answer": dict(expected, classification="decoder-only")}, "error": ""}
    assert compare.judge_case("quiz_x", key, right, [], 1.0, []).passed
    assert not compare.judge_case("quiz_x", key, wrong, [], 1.0, []).passed
    public = dict(key, public=True, expected=None)
    assert compare.judge_case("quiz_x", public, wrong, [], 1.0, []).passed


def test_all_nan_mistake_is_no_evidence():
    """Is a mistake whose output is all NaN kept from matching an unrelated failing output?"""
    key = {"name": "c", "public": True, "expected": {"w": t([1.0, 2.0])},
           "mistakes": {"nan": {"w": t([np.nan, np.nan])}}}
    mistakes = [{"name": "nan", "title": "all NaN", "hint": "h"}]
    unrelated = {"outputs": {"w": t([5.0, 7.0])}, "error": ""}
    assert compare.judge_case("x", key, unrelated, mistakes, 1.0).mistake is None
    same = {"outputs": {"w": t([np.nan, np.nan])}, "error": ""}
    assert compare.judge_case("x", key, same, mistakes, 1.0).mistake["name"] == "nan"


def test_mistake_explaining_some_failing_cases_is_not_named():
    """Is a mistake whose output matches one failing case but not another left unnamed on both (it would point the
    wrong way on the other), and named on both when it explains both?"""
    ik = {"kind": "function", "choices": [], "mistakes": [{"name": "m", "title": "a slip", "hint": "h"}], "cases": [
        {"name": "a", "public": True, "expected": {"o": t([1.0])}, "mistakes": {"m": {"o": t([2.0])}}},
        {"name": "b", "public": True, "expected": {"o": t([1.0])}, "mistakes": {"m": {"o": t([3.0])}}},
    ]}
    got = {"outputs": {"o": t([2.0])}, "error": ""}
    explained = compare.judge_item("x", ik, {"a": got, "b": {"outputs": {"o": t([3.0])}, "error": ""}}, 0.5)
    assert [r.mistake["name"] for r in explained] == ["m", "m"]
    half = compare.judge_item("x", ik, {"a": got, "b": {"outputs": {"o": t([5.0])}, "error": ""}}, 0.5)
    assert [r.mistake for r in half] == [None, None]


def test_dtype_mismatch_blocks_value_diagnoses():
    """When the dtype already differs (float32 arithmetic on float64 inputs), is no value mistake (a NaN or overflow
    one, whose other values equal the reference's) named?"""
    ik = {"kind": "function", "choices": [], "mistakes": [{"name": "nan", "title": "NaN rows", "hint": "h"}],
          "cases": [{"name": "a", "public": True, "expected": {"w": t([0.25, 0.0])},
                     "mistakes": {"nan": {"w": t([0.25, np.nan])}}}]}
    float32 = {"outputs": {"w": t([0.25, 0.0], "float32")}, "error": ""}
    (result,) = compare.judge_item("x", ik, {"a": float32}, 1.0)
    assert not result.passed and result.mistake is None
    assert any("dtype float32, expected float64" in p for p in result.problems)
    (same_dtype,) = compare.judge_item("x", ik, {"a": {"outputs": {"w": t([0.25, np.nan])}, "error": ""}}, 1.0)
    assert same_dtype.mistake["name"] == "nan"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.id)
def test_references_and_mistakes_leave_their_inputs_alone(keys, nb):
    """Does no reference, and no known mistake, change its inputs in place (so no expected output says so)?"""
    from autograder.exercise import MUTATED

    for item_id, ik in keys[nb.id].items():
        for case in ik["cases"]:
            assert MUTATED not in case["expected"], (item_id, case["name"], case["expected"][MUTATED])
            for name, out in case["mistakes"].items():
                assert MUTATED not in out, (item_id, name, case["name"])


def test_input_changes_fail_the_case_and_say_what_changed():
    """Does a case whose outputs are right but whose inputs were changed in place fail, saying which input
    changed and how, and name no mistake?"""
    from autograder.exercise import MUTATED

    key = {"name": "c", "public": True, "expected": {"o": t([1.0])}, "mistakes": {}}
    got = {"outputs": {"o": t([1.0]), MUTATED: ["mask: its shape changed from [2, 5, 5] to [2, 1, 5, 5]"]}, "error": ""}
    result = compare.judge_case("x", key, got, [], 1.0)
    assert not result.passed and result.mistake is None
    assert result.problems[0] == "input mask: its shape changed from [2, 5, 5] to [2, 1, 5, 5]"
    assert "changed its inputs in place" in result.problems[1]
