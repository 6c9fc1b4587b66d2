"""Days 8-9 (multi-head attention): its demo students, reused pieces, its properties and its runners."""
from __future__ import annotations

import html
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import students as demo_students
from autograder import compare
from autograder.config import ROOT
from autograder.exercise import StudentError
from autograder.exercises import day08_multi_head_attention as ex
from autograder.hidden.transformer_mistakes import GivenMHA
from autograder.sandbox import _fresh, _plain_outputs
from conftest import gradebook_rows, results_of, solution_namespace, grade_students

D08 = "day08_multi_head_attention"
SOLUTION = ROOT / "solutions" / "week2" / f"{D08}.ipynb"
EXERCISES = {e.id: e for e in ex.EXERCISES}


@pytest.fixture(scope="module")
def reference_ns():
    """The notebook's solution cells (no demos, no checks) executed in one namespace."""
    return solution_namespace(SOLUTION)


def failed(tests: dict, item: str) -> dict[str, str]:
    return {name: t["output"] for name, t in tests.items() if name.startswith(f"{item}: ") and t["status"] == "failed"}


# --- the demo class ----------------------------------------------------------------

@pytest.mark.parametrize("student,titles", [
    ("ivy_d08_view_no_transpose", {"split_heads": "the heads are split with view(B, h, L, d_k) and no transpose",
                                   "merge_heads": "the heads are merged with view/reshape and no transpose"}),
    ("jay_d08_mask_no_head_axis", {"MultiHeadAttention": "mask is used without a head axis"}),
    ("kim_d08_sqrt_d_model", {"MultiHeadAttention": "scaled by sqrt(d_model) instead of sqrt(d_k)"}),
    ("lou_d08_forgot_biases", {"mha_parameter_count": "the biases are not counted"}),
])
def test_realistic_students_lose_points_on_their_item_only(course, graded_demo, student, titles):
    """Does each Days 8-9 demo student lose points on the items they got wrong and only there, with the
    mistake named in every failing case and in the feedback? (Ivy's forward calls her broken split_heads
    and merge_heads; she keeps full marks on MultiHeadAttention because the grader injects the reference
    versions.)"""
    _, out = graded_demo
    row = gradebook_rows(out)[student]
    for it in course.notebook(D08).auto_items:
        if it.id in titles:
            assert float(row[it.id]) < it.points
        else:
            assert float(row[it.id]) == it.points, f"{student} lost points on {it.id}"
    tests = results_of(out, student)
    feedback = (out / "feedback" / f"{student}.html").read_text()
    for item, title in titles.items():
        outs = failed(tests, item)
        assert outs and all(title in o for o in outs.values()), list(outs.values())[:2]
        assert any("(public" in o for o in outs.values()) and any("(hidden)" in o for o in outs.values())
        assert html.escape(title) in feedback


def test_mask_without_head_axis_errors_or_misaligns(graded_demo):
    """Does the unbroadcast mask fail in both of its ways, a shape error when B != h and silently wrong
    numbers when B == h, while 2-D and 4-D masks (which need no head axis) still pass?"""
    _, out = graded_demo
    tests = results_of(out, "jay_d08_mask_no_head_axis")
    outs = failed(tests, "MultiHeadAttention")
    assert "raised RuntimeError" in outs["MultiHeadAttention: mask-3d-float64"]
    assert "raised" not in outs["MultiHeadAttention: padding-mask-float64"]
    assert "values differ" in outs["MultiHeadAttention: padding-mask-float64"]
    for passing in ("self-attention-float64", "mask-4d-float64", "causal-no-bias-float32", "cross-mask-4d-float64"):
        assert tests[f"MultiHeadAttention: {passing}"]["status"] == "passed", passing


# --- students written for these tests, graded by the real grader ------------------------

def _replace(source: str, old: str, new: str) -> str:
    assert old in source, old
    return source.replace(old, new)


def _adhoc_students(course) -> dict[str, dict[str, str]]:
    nb = course.notebook(D08)
    sol = demo_students.solution_sources(nb)
    sdpa = demo_students.solution_sources(course.notebook("day06_scaled_dot_product_attention"))[
        "scaled_dot_product_attention"]
    mha = sol["MultiHeadAttention"]
    return {
        # Day 6's classic bug (no scaling) pasted in below the import, which it overrides.
        "t08_day6_unscaled": {"*": "solution", "+day6": _replace(
            sdpa, "query @ key.transpose(-2, -1) / math.sqrt(d_k)", "query @ key.transpose(-2, -1)")},
        # No Day 6 function at all: the imported one deleted.
        "t08_day6_not_pasted": {"*": "solution", "+day6": "del scaled_dot_product_attention\n"},
        # Returns the dropped-out weights.
        "t08_weights_after_dropout": {"*": "solution", "MultiHeadAttention": _replace(
            mha, "context = self.dropout(weights) @ v", "weights = self.dropout(weights)\n        context = weights @ v")},
        # Splits inline with a bare view (does not call split_heads, so no reference can stand in).
        "t08_inline_view_split": {"*": "solution", "MultiHeadAttention": _replace(_replace(_replace(
            mha, "split_heads(self.W_q(query), self.num_heads)",
            "self.W_q(query).view(query.size(0), self.num_heads, query.size(1), self.d_k)"),
            "split_heads(self.W_k(key), self.num_heads)",
            "self.W_k(key).view(key.size(0), self.num_heads, key.size(1), self.d_k)"),
            "split_heads(self.W_v(value), self.num_heads)",
            "self.W_v(value).view(value.size(0), self.num_heads, value.size(1), self.d_k)")},
    }


@pytest.fixture(scope="module")
def adhoc(course, fast_course, tmp_path_factory):
    """The students above, graded once: (submitted folder, output folder)."""
    return grade_students(fast_course, D08, _adhoc_students(course), tmp_path_factory)


@pytest.mark.parametrize("student", ["t08_day6_unscaled", "t08_day6_not_pasted"])
def test_buggy_day6_paste_costs_nothing(course, adhoc, student):
    """Does a student whose own Day-6 function is buggy (pasted over the import) or missing still get full
    marks on every item, and on MultiHeadAttention in particular, when the forward they wrote is right (the
    grader injects the reference scaled_dot_product_attention)? And is that the injection at work: does the
    student's own check, which uses their function, fail MultiHeadAttention?"""
    dest, out = adhoc
    row = gradebook_rows(out)[student]
    for it in course.notebook(D08).auto_items:
        assert float(row[it.id]) == it.points, (student, it.id, row[it.id])
    # The student's own check, as they run it (a separate process, like the command line).
    proc = subprocess.run([sys.executable, "-m", "autograder", "check", "--json",
                           str(dest / student / course.notebook(D08).path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    items = {i["id"]: i for i in json.loads(proc.stdout)["result"]["items"]}
    assert not all(c["passed"] for c in items["MultiHeadAttention"]["cases"])
    assert all(c["passed"] for c in items["split_heads"]["cases"])


@pytest.mark.parametrize("student,title,cases", [
    ("t08_weights_after_dropout", "the returned weights are the ones after dropout", {"weights-before-dropout"}),
    ("t08_inline_view_split", "the heads are split with view(B, h, L, d_k) and no transpose", None),
])
def test_forward_mistakes_are_named(course, adhoc, student, title, cases):
    """Are mistakes the reference pieces cannot hide named on MultiHeadAttention: weights returned after
    dropout (seen only on the training-mode cases, whose compared weights do not depend on the draws) and
    a bare-view split written inline?"""
    _, out = adhoc
    row = gradebook_rows(out)[student]
    assert float(row["MultiHeadAttention"]) < 5
    outs = failed(results_of(out, student), "MultiHeadAttention")
    assert outs and all(title in o for o in outs.values()), list(outs.values())[:2]
    if cases:
        assert {name.split(": ")[1].rsplit("-", 1)[0] for name in outs} == cases


# --- properties of the reference ------------------------------------------------------

def _load_into_torch(mha):
    theirs = nn.MultiheadAttention(mha.d_model, mha.num_heads, batch_first=True, dtype=torch.float64).eval()
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([mha.W_q.weight, mha.W_k.weight, mha.W_v.weight]))
        theirs.in_proj_bias.copy_(torch.cat([mha.W_q.bias, mha.W_k.bias, mha.W_v.bias]))
        theirs.out_proj.weight.copy_(mha.W_o.weight)
        theirs.out_proj.bias.copy_(mha.W_o.bias)
    return theirs


@pytest.mark.parametrize("shape", ["none", "(Lq, Lk)", "(B, 1, Lk)", "(B, Lq, Lk)", "(B, 1, Lq, Lk)"])
def test_reference_equals_torch_multihead_attention(reference_ns, shape):
    """Does the reference module equal nn.MultiheadAttention on the same weights, with the inverted mask,
    for cross-attention and every mask shape the spec allows, weights per head included?"""
    torch.manual_seed(0)
    B, Lq, Lk, D, h = 3, 4, 6, 16, 4
    mha = reference_ns["MultiHeadAttention"](D, h).double().eval()
    theirs = _load_into_torch(mha)
    q, k, v = (torch.randn(B, n, D, dtype=torch.float64) for n in (Lq, Lk, Lk))
    full = torch.rand(B, Lq, Lk) > 0.4
    full[..., 0] = True
    mask, kwargs = None, {}
    if shape == "(Lq, Lk)":
        mask = full[0]
        kwargs = {"attn_mask": ~mask}
    elif shape == "(B, 1, Lk)":
        mask = full[:, :1, :]
        kwargs = {"key_padding_mask": ~mask[:, 0]}
    elif shape == "(B, Lq, Lk)":
        mask = full
        kwargs = {"attn_mask": (~mask).repeat_interleave(h, dim=0)}
    elif shape == "(B, 1, Lq, Lk)":
        mask = full.unsqueeze(1)
        kwargs = {"attn_mask": (~mask).expand(B, h, Lq, Lk).reshape(B * h, Lq, Lk)}
    ours_out, ours_w = mha(q, k, v, mask)
    their_out, their_w = theirs(q, k, v, average_attn_weights=False, **kwargs)
    assert ours_w.shape == (B, h, Lq, Lk)
    torch.testing.assert_close(ours_out, their_out)
    torch.testing.assert_close(ours_w, their_w)


def test_parameter_count_is_the_modules_and_ignores_heads(reference_ns):
    """Is the reference mha_parameter_count the module's real parameter count, the same for every number
    of heads, with and without biases?"""
    count, MHA = reference_ns["mha_parameter_count"], reference_ns["MultiHeadAttention"]
    for d_model, bias in [(8, True), (8, False), (24, True), (64, False)]:
        counts = {count(d_model, h, bias=bias) for h in (1, 2, 4, 8) if d_model % h == 0}
        assert counts == {sum(p.numel() for p in MHA(d_model, 2, bias=bias).parameters())}
        assert counts == {4 * d_model * d_model + (4 * d_model if bias else 0)}


def test_key_holds_what_the_spec_says(keys):
    """Does the answer key agree with the spec: weights of shape (B, h, Lq, Lk) in every case, ValueError
    exactly when the heads do not divide d_model, and counts of 4*d**2 (+ 4*d with biases)?"""
    key = keys[D08]
    for case in key["MultiHeadAttention"]["cases"]:
        inputs, exp = case["inputs"], case["expected"]
        heads = inputs["num_heads"]
        lk = inputs["query" if inputs.get("self") else "key"].shape[1]
        assert exp["weights"].shape == (inputs["query"].shape[0], heads, inputs["query"].shape[1], lk)
        if "init_check" in inputs:
            d_model, h = inputs["init_check"]
            assert exp["init_check_raised_value_error"] is (d_model % h != 0)
    assert sum("init_check" in c["inputs"] and c["public"] for c in key["MultiHeadAttention"]["cases"]) >= 1
    for case in key["mha_parameter_count"]["cases"]:
        d, bias = case["inputs"]["d_model"], case["inputs"].get("bias", True)
        assert case["expected"]["count"] == 4 * d * d + (4 * d if bias else 0)


# --- other correct implementations pass; the runner explains a wrong module --------

class EinsumMHA(GivenMHA):
    """Correct, but scales the queries first and writes the products as einsums."""

    def forward(self, query, key, value, mask=None):
        B, Lq, D = query.shape
        q = self.W_q(query).unflatten(-1, (self.num_heads, self.d_k)) * self.d_k ** -0.5  # (B, Lq, h, d_k)
        k = self.W_k(key).unflatten(-1, (self.num_heads, self.d_k))
        v = self.W_v(value).unflatten(-1, (self.num_heads, self.d_k))
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k)
        if mask is not None:
            scores = scores.masked_fill(~(mask[:, None] if mask.dim() == 3 else mask), -math.inf)
        weights = scores.softmax(-1).nan_to_num(0.0)
        context = torch.einsum("bhqk,bkhd->bqhd", self.dropout(weights), v).reshape(B, Lq, D)
        return self.W_o(context), weights


class FusedMHA(GivenMHA):
    """Correct, with PyTorch's fused attention for the output where no dropout applies.

    In training mode the output must use self.dropout(weights), whose seeded draws the case compares, so the
    fused kernel (which draws its own dropout) is used only in eval mode.
    """

    def forward(self, query, key, value, mask=None):
        B, Lq, D = query.shape
        q, k, v = (w(x).view(B, -1, self.num_heads, self.d_k).transpose(1, 2)
                   for w, x in ((self.W_q, query), (self.W_k, key), (self.W_v, value)))
        if mask is not None and mask.dim() == 3:
            mask = mask.unsqueeze(1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, -1)
        if mask is not None:
            weights = torch.where(mask.any(-1, keepdim=True), weights, torch.zeros_like(weights))
        if self.training:
            out = self.dropout(weights) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.W_o(out.transpose(1, 2).reshape(B, Lq, D)), weights


@pytest.mark.parametrize("item,impl", [
    ("MultiHeadAttention", EinsumMHA),
    ("MultiHeadAttention", FusedMHA),
    ("split_heads", lambda x, num_heads: x.unflatten(-1, (num_heads, -1)).permute(0, 2, 1, 3)),
    ("merge_heads", lambda x: x.permute(0, 2, 1, 3).flatten(2)),
], ids=["einsum-mha", "fused-mha", "unflatten-split", "flatten-merge"])
def test_other_correct_implementations_pass_every_case(keys, item, impl):
    """Do correct implementations written differently from the reference (other operation orders, fused
    attention, einsum) pass every public and hidden case within the tolerances?"""
    ik = keys[D08][item]
    raw = {}
    for case in ik["cases"]:
        raw[case["name"]] = {"outputs": _plain_outputs(EXERCISES[item].run(impl, _fresh(case["inputs"]))), "error": ""}
    results = compare.judge_item(item, ik, raw, 1.0)
    assert all(r.passed for r in results), [r.text() for r in results if not r.passed][:2]


def test_runner_names_missing_and_unexpected_parameters():
    """Does a module whose projections are renamed get a message naming the expected and unexpected
    state_dict keys, instead of a bare load_state_dict traceback?"""

    class Renamed(nn.Module):
        def __init__(self, d_model, num_heads, dropout=0.0, bias=True):
            super().__init__()
            self.q_proj = nn.Linear(d_model, d_model, bias=bias)
            self.W_k = nn.Linear(d_model, d_model, bias=bias)
            self.W_v = nn.Linear(d_model, d_model, bias=bias)
            self.W_o = nn.Linear(d_model, d_model, bias=bias)

    inputs = ex.mha_inputs(np.random.default_rng(0), 1, 3, 3, 4, 2, self_attention=True)
    with pytest.raises(StudentError) as err:
        EXERCISES["MultiHeadAttention"].run(Renamed, inputs)
    message = str(err.value)
    assert "lacks W_q.bias, W_q.weight" in message and "unexpected entries q_proj.bias, q_proj.weight" in message
