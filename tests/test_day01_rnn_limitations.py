"""Days 1-2 (RNN limitations): the items' semantics, their cases and mistakes, and the demo students."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from autograder import compare, reference
from autograder.config import ROOT, load_course
from autograder.exercise import StudentError, exercises
from autograder.exercises import day01_rnn_limitations as public
from autograder.hidden import day01_rnn_limitations as hidden
from conftest import gradebook_rows, results_of

NB = "day01_rnn_limitations"


@pytest.fixture(scope="module")
def ref():
    """The reference rnn_forward and hidden_gradient_norms, taken from the solution notebook."""
    ns = {"np": np}
    sources = reference.solution_sources(load_course().notebook(NB))
    for item in ("rnn_forward", "hidden_gradient_norms"):
        exec(sources[item], ns)
    return ns


def all_cases(item):
    course = load_course()
    ex = exercises(NB)[item]
    return (ex.public_cases(reference.item_rng(course.grading.public_seed, item))
            + hidden.HIDDEN_CASES[item](reference.item_rng(course.grading.hidden_seed, item)))


def rnn_inputs(seed, T, B, D, H, radius=0.9, x_scale=1.0):
    return public.rnn_inputs(np.random.default_rng(seed), T, B, D, H, x_scale=x_scale, radius=radius)


@pytest.mark.parametrize("student,item,mistake", [
    ("ivy_d01_keeps_h0", "rnn_forward", "h0 is returned as well"),
    ("lea_d01_textbook_order", "rnn_forward", "W_hh is applied as W_hh @ h"),
    ("jon_d01_frobenius", "hidden_gradient_norms", "the Frobenius norm is used"),
    ("kai_d01_by_distance", "hidden_gradient_norms", "the norms are in reverse order"),
])
def test_demo_students_lose_points_on_their_item_with_the_mistake_named(course, graded_demo, student, item, mistake):
    """Does each realistic Day-1 student lose points on the item they got wrong only, with the mistake named
    on public and hidden cases alike?"""
    _, out = graded_demo
    row = gradebook_rows(out)[student]
    assert float(row[item]) < course.item(item)[1].points
    failed = [t for name, t in results_of(out, student).items() if name.startswith(item + ":") and t["status"] == "failed"]
    assert failed and all(mistake in t["output"] for t in failed), [t["output"] for t in failed][:2]
    wrong = {item, "quiz_rnn_long_range"} if student == "kai_d01_by_distance" else {item}
    for other in course.notebook(NB).auto_items:
        if other.id not in wrong:
            assert float(row[other.id]) == other.points, other.id
    if student == "kai_d01_by_distance":
        assert float(row["quiz_rnn_long_range"]) == 0


def test_rnn_forward_equals_torch_rnn_on_every_case(ref):
    """Does the reference rnn_forward agree with torch.nn.RNN (weights transposed, one bias) on every
    public and hidden case, so the expected outputs are right?"""
    for case in all_cases("rnn_forward"):
        x, h0, W_xh, W_hh, b = (case.inputs[k] for k in ("x", "h0", "W_xh", "W_hh", "b"))
        rnn = torch.nn.RNN(W_xh.shape[0], W_xh.shape[1]).double()
        with torch.no_grad():
            rnn.weight_ih_l0.copy_(torch.from_numpy(W_xh.T))
            rnn.weight_hh_l0.copy_(torch.from_numpy(W_hh.T))
            rnn.bias_ih_l0.copy_(torch.from_numpy(b))
            rnn.bias_hh_l0.zero_()
            expected, _ = rnn(torch.from_numpy(x), torch.from_numpy(h0)[None])
        got = ref["rnn_forward"](x, h0, W_xh, W_hh, b)
        assert got.shape == x.shape[:2] + (W_hh.shape[0],) and got.dtype == np.float64, case.name
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12, atol=1e-13, err_msg=case.name)


@pytest.mark.parametrize("T,H,radius,x_scale", [(1, 4, 0.9, 1.0), (6, 1, 0.9, 1.0), (12, 5, 1.3, 1.0), (9, 6, 1.0, 8.0)])
def test_gradient_norms_equal_autograd_jacobians(ref, T, H, radius, x_scale):
    """Is norms[t] the spectral norm of d h_{T-1} / d h_t as autograd computes it through the unrolled
    RNN (T = 1, H = 1 and saturated states included)?"""
    args = rnn_inputs(T * 100 + H, T, 1, 3, H, radius=radius, x_scale=x_scale)
    hs = ref["rnn_forward"](**args)[:, 0]
    x, W_xh, W_hh, b = (torch.from_numpy(args[k]) for k in ("x", "W_xh", "W_hh", "b"))

    def last_from(t):
        def f(h):
            for k in range(t + 1, T):
                h = torch.tanh(x[k, 0] @ W_xh + h @ W_hh + b)
            return h
        return f

    expected = [torch.linalg.matrix_norm(torch.autograd.functional.jacobian(last_from(t), torch.from_numpy(hs[t])), ord=2)
                for t in range(T)]
    np.testing.assert_allclose(ref["hidden_gradient_norms"](hs, args["W_hh"]), np.array(expected), rtol=1e-10, atol=1e-14)


def test_gradient_norms_vanish_below_and_explode_above_radius_one(ref):
    """Does the notebook's experiment show what its prose claims: with small inputs, 100 steps back the
    gradient has vanished at spectral radius 0.8 and exploded at 1.5, and stays in between at 1?"""
    rng = np.random.default_rng(0)
    W = public.recurrent_matrix(rng, 64, 1.0)
    x, W_xh = 0.1 * rng.standard_normal((150, 1, 8)), rng.standard_normal((8, 64)) / np.sqrt(8)
    at_100 = {}
    for radius in (0.8, 1.0, 1.5):
        hs = ref["rnn_forward"](x, np.zeros((1, 64)), W_xh, radius * W, np.zeros(64))[:, 0]
        norms = ref["hidden_gradient_norms"](hs, radius * W)
        assert norms[-1] == 1.0
        at_100[radius] = norms[-101]
    assert at_100[0.8] < 1e-8 and at_100[1.5] > 1e3 and at_100[0.8] < at_100[1.0] < at_100[1.5]


def test_W_hh_versus_its_transpose_only_shows_through_the_tanh_factors(ref):
    """Using W_hh instead of W_hh.T gives the same norms when every tanh factor is 1 (powers of W and W.T
    have equal spectral norms), so it is only a mistake worth naming because real states make them differ."""
    rng = np.random.default_rng(3)
    W = public.recurrent_matrix(rng, 5, 1.2)
    wrong = next(m.impl for m in hidden.MISTAKES["hidden_gradient_norms"] if m.name == "W_hh_not_transposed")
    zeros = np.zeros((10, 5))
    np.testing.assert_allclose(wrong(zeros, W), ref["hidden_gradient_norms"](zeros, W), rtol=1e-10)
    states = np.tanh(rng.standard_normal((10, 5)))
    assert not np.allclose(wrong(states, W), ref["hidden_gradient_norms"](states, W), rtol=1e-3)


def test_hidden_cases_cover_the_edge_cases():
    """Do the cases include T = 1, B = 1, D != H, D == H, H = 1 and saturating tanh for rnn_forward, and
    T = 1, H = 1, saturated states and radii below, at and above 1 for hidden_gradient_norms?"""
    shapes = [(c.inputs["x"].shape, c.inputs["W_hh"].shape[0]) for c in all_cases("rnn_forward")]
    assert any(T == 1 for (T, _, _), _ in shapes) and any(B == 1 for (_, B, _), _ in shapes)
    assert any(D != H for (_, _, D), H in shapes) and any(D == H for (_, _, D), H in shapes)
    assert any(H == 1 for _, H in shapes)
    assert any(np.abs(c.inputs["x"]).max() > 10 for c in all_cases("rnn_forward"))
    norm_cases = all_cases("hidden_gradient_norms")
    assert {c.inputs["hs"].shape[0] for c in norm_cases} >= {1, 2}
    assert any(c.inputs["hs"].shape[1] == 1 for c in norm_cases)
    assert any(np.mean(np.abs(c.inputs["hs"]) > 0.99) > 0.5 for c in norm_cases)
    radii = [np.abs(np.linalg.eigvals(c.inputs["W_hh"])).max() for c in norm_cases]
    assert min(radii) < 1 - 1e-6 and max(radii) > 1 + 1e-6 and any(abs(r - 1) < 1e-9 for r in radii)


def test_every_mistake_is_told_apart_on_public_and_hidden_cases(keys):
    """Does every mistake differ from the reference and from every mistake listed before it on at least one
    public and one hidden case (otherwise it could never be named)?"""
    key = keys[NB]
    for item in ("rnn_forward", "hidden_gradient_norms"):
        names = [m["name"] for m in key[item]["mistakes"]]
        for i, name in enumerate(names):
            for public_case in (True, False):
                distinct = []
                for case in (c for c in key[item]["cases"] if c["public"] == public_case):
                    out = case["mistakes"][name]
                    differs = lambda other: ("$error" in out) != ("$error" in other) or (
                        "$error" not in out and bool(compare.compare_outputs(other, out)))
                    if differs(case["expected"]) and all(differs(case["mistakes"][n]) for n in names[:i]):
                        distinct.append(case["name"])
                assert distinct, f"{item}/{name}: not distinct on any {'public' if public_case else 'hidden'} case"


def test_list_results_are_explained(ref):
    """Is a list of states (or of norms) refused with a message that says to make one array?"""
    args = rnn_inputs(0, 3, 2, 2, 3)
    with pytest.raises(StudentError, match="np.stack"):
        public.run_rnn(lambda *a: list(ref["rnn_forward"](*a)), args)
    with pytest.raises(StudentError, match=r"norms of shape \(T,\)"):
        public.run_norms(lambda hs, W: [1.0] * len(hs), {"hs": np.zeros((3, 2)), "W_hh": np.eye(2)})


def test_public_module_ships_no_solution():
    """Does the public exercise module (part of the student release) leave out the reference recurrence and
    the Jacobian product, so that reading it gives no answer away?"""
    text = (ROOT / "autograder" / "exercises" / f"{NB}.py").read_text()
    for line in ("h @ W_hh", "@ W_hh.T", "W_hh.T", "ord=2", "np.eye"):
        assert line not in text, line


def test_items_run_fast(ref):
    """Do all cases of each item take well under a second on the reference (the sandbox allows 10 s)?"""
    for item, run in (("rnn_forward", public.run_rnn), ("hidden_gradient_norms", public.run_norms)):
        cases = all_cases(item)
        start = time.perf_counter()
        for case in cases:
            run(ref[item], case.inputs)
        assert time.perf_counter() - start < 0.5, item
