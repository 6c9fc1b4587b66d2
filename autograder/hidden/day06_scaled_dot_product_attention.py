"""Days 6-7, instructor only: hidden cases, and the mistakes students make, as code.

Never shipped to students. The release carries only these mistakes' outputs
on the public cases (as data), so the student's check can name them too.
"""
from __future__ import annotations

import math

import torch

from ..exercise import Case, Mistake
from ..exercises.day06_scaled_dot_product_attention import (
    attention_inputs, flops_case, random_mask, token_batch, tril,
)


def attention_hidden(rng):
    return [
        Case("2d-float32", attention_inputs(rng, (), 7, 3, 12, 9, "float32")),
        Case("3d-full-mask-float64",
             dict(attention_inputs(rng, (3,), 5, 6, 4, 7), mask=random_mask(rng, (3, 5, 6)))),
        Case("4d-padding-float32",
             dict(attention_inputs(rng, (2, 4), 3, 8, 8, 8, "float32"), mask=random_mask(rng, (2, 1, 1, 8)))),
        Case("4d-causal-float32", dict(attention_inputs(rng, (1, 2), 9, 9, 16, 4, "float32"), mask=tril(9))),
        Case("single-query-float64", dict(attention_inputs(rng, (2,), 1, 6, 5, 5), mask=random_mask(rng, (2, 1, 6)))),
        Case("single-key-float64", attention_inputs(rng, (2,), 4, 1, 5, 2)),
        Case("fully-masked-rows-4d-float32",
             dict(attention_inputs(rng, (2, 2), 5, 4, 8, 6, "float32"),
                  mask=random_mask(rng, (2, 1, 5, 4), empty_rows=(0, 3)))),
        Case("huge-scores-float64", attention_inputs(rng, (3,), 4, 5, 16, 3, scale=200.0)),
        Case("large-scores-float32", attention_inputs(rng, (2,), 5, 5, 8, 4, "float32", scale=30.0),
             tolerance=(1e-3, 1e-3)),
        Case("gradients-float32",
             dict(attention_inputs(rng, (2, 2), 3, 4, 8, 5, "float32"),
                  mask=random_mask(rng, (2, 1, 3, 4), empty_rows=(2,)), grad=True,
                  probe=rng.standard_normal((2, 2, 3, 5)).astype("float32"))),
        Case("gradients-causal-float64",
             dict(attention_inputs(rng, (3,), 6, 6, 4, 4), mask=tril(6), grad=True,
                  probe=rng.standard_normal((3, 6, 4)))),
    ]


HIDDEN_CASES = {
    "scaled_dot_product_attention": attention_hidden,
    "causal_mask": lambda rng: [Case("size-2", {"size": 2}), Case("size-16", {"size": 16}),
                                Case("size-5-device", {"size": 5, "device": "cpu"})],
    "padding_mask": lambda rng: [
        Case("batch-of-1", {"tokens": token_batch(rng, 1, 8, 0), "pad_id": 0}),
        Case("pad-7", {"tokens": token_batch(rng, 4, 9, 7), "pad_id": 7}),
        Case("long", {"tokens": token_batch(rng, 3, 40, 1, vocab=50), "pad_id": 1}),
    ],
    "attention_flops": lambda rng: [
        flops_case("long-context", 8192, 8192, 64, 64),
        flops_case("narrow-values", 7, 3, 32, 4),
        flops_case("single-query", 1, 1000, 128, 256),
    ],
    "quiz_sqrt_dk": lambda rng: [],
}


def _attention(scale="sqrt", softmax_dim=-1, mask_mode="before", fill=float("-inf"), naive=False,
               zero_empty_rows=True, transpose="last2"):
    """A family of attention implementations, each with one deliberate deviation."""

    def attention(query, key, value, mask=None):
        d_k = query.size(-1)
        kt = key.T if transpose == "T" else key.transpose(-2, -1)
        scores = query @ kt
        scores = scores / {"sqrt": math.sqrt(d_k), "dk": d_k, "none": 1.0}[scale]
        allowed = None if mask is None else (~mask if mask_mode == "inverted" else mask)
        if mask is not None and mask_mode in ("before", "inverted"):
            scores = scores.masked_fill(~allowed, fill)
        if naive:
            e = torch.exp(scores)
            weights = e / e.sum(dim=softmax_dim, keepdim=True)
        else:
            weights = torch.softmax(scores, dim=softmax_dim)
        if mask is not None and mask_mode == "after":
            weights = weights.masked_fill(~mask, 0.0)
        if mask is not None and zero_empty_rows and mask_mode != "after" and fill == float("-inf"):
            weights = weights.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)
        return weights @ value, weights

    return attention


ATTENTION_MISTAKES = [
    Mistake("no_scaling", "the scores are not scaled",
            "divide q @ k^T by math.sqrt(d_k), with d_k = query.size(-1)", _attention(scale="none")),
    Mistake("scaled_by_dk", "the scores are divided by d_k instead of sqrt(d_k)",
            "divide by math.sqrt(d_k): dividing by d_k shrinks the scores too much", _attention(scale="dk")),
    Mistake("softmax_over_queries", "the softmax runs over the query axis",
            "normalise over the keys: torch.softmax(scores, dim=-1); each row (one query) must sum to 1",
            _attention(softmax_dim=-2)),
    Mistake("mask_after_softmax", "the mask is applied after the softmax",
            "set masked scores to -inf before the softmax, so the remaining weights still sum to 1",
            _attention(mask_mode="after")),
    Mistake("mask_inverted", "the mask is inverted",
            "in this course True means 'may attend': fill the scores where the mask is False "
            "(masked_fill(~mask, -inf)); nn.MultiheadAttention uses the opposite convention",
            _attention(mask_mode="inverted")),
    Mistake("fill_minus_1e9", "masked scores are filled with -1e9 instead of -inf",
            "with -1e9 a query with no allowed key averages all values uniformly; use float('-inf') and set "
            "the weights of fully masked rows to 0", _attention(fill=-1e9)),
    Mistake("nan_on_fully_masked_rows", "fully masked rows come out as NaN",
            "softmax of a row that is all -inf is 0/0; zero those rows, e.g. "
            "weights.masked_fill(~mask.any(-1, keepdim=True), 0.0)", _attention(zero_empty_rows=False)),
    Mistake("softmax_overflow", "the softmax overflows on large scores",
            "exp of a large score is inf; use torch.softmax, or subtract the row maximum before exp",
            _attention(naive=True)),
    Mistake("key_T_on_batch", "key.T transposes every axis of a batched key",
            "use key.transpose(-2, -1): .T reverses all axes of a 3-D or 4-D tensor", _attention(transpose="T")),
]


def _causal(kind):
    def causal_mask(size, device=None):
        ones = torch.ones(size, size, dtype=torch.bool, device=device)
        return {"below": torch.tril(ones, diagonal=-1), "above": torch.tril(ones, diagonal=1),
                "upper": torch.triu(ones), "inverted": torch.triu(ones, diagonal=1),
                "float": torch.tril(ones).float()}[kind]

    return causal_mask


def _padding(kind):
    def padding_mask(tokens, pad_id):
        return {"queries": (tokens != pad_id).unsqueeze(2), "inverted": (tokens == pad_id).unsqueeze(1),
                "no_axis": tokens != pad_id}[kind]

    return padding_mask


def _flops(kind):
    def attention_flops(n_queries, n_keys, d_k, d_v):
        nm = n_queries * n_keys
        return {"macs": nm * d_k + nm * d_v, "one_product": 2 * nm * d_k, "dk_twice": 4 * nm * d_k,
                "square": 2 * n_queries * n_queries * (d_k + d_v)}[kind]

    return attention_flops


MISTAKES = {
    "scaled_dot_product_attention": ATTENTION_MISTAKES,
    "causal_mask": [
        Mistake("diagonal_excluded", "the causal mask hides the diagonal (shifted down by one)",
                "position i may attend to itself: torch.tril(ones) with the default diagonal=0", _causal("below")),
        Mistake("shifted_up", "the causal mask lets each position see one step ahead",
                "use diagonal=0 in torch.tril: position i may see j <= i only", _causal("above")),
        Mistake("upper_triangular", "the causal mask is upper-triangular",
                "True must be on and below the diagonal: torch.tril, not torch.triu", _causal("upper")),
        Mistake("inverted", "the causal mask is inverted (True marks the future)",
                "in this course True means 'may attend'; nn.Transformer's masks use the opposite meaning",
                _causal("inverted")),
        Mistake("float_mask", "the mask is a float tensor",
                "build it with dtype=torch.bool (or compare, e.g. ... == 1): masks here are boolean", _causal("float")),
    ],
    "padding_mask": [
        Mistake("over_queries", "the padding mask hides padding queries instead of padding keys",
                "the key axis is the last one: (tokens != pad_id).unsqueeze(1) has shape (B, 1, L)", _padding("queries")),
        Mistake("inverted", "the padding mask is inverted",
                "True means 'may attend': tokens != pad_id", _padding("inverted")),
        Mistake("no_query_axis", "the padding mask has shape (B, L)",
                "insert the query axis with .unsqueeze(1), giving (B, 1, L), so it broadcasts over queries",
                _padding("no_axis")),
    ],
    "attention_flops": [
        Mistake("multiply_add_as_one", "a multiply-add is counted as one operation",
                "count each multiply-add as 2 FLOPs: 2*n*m*d_k + 2*n*m*d_v", _flops("macs")),
        Mistake("one_product", "only Q @ K^T is counted", "add the second product, weights @ V: 2*n*m*d_v",
                _flops("one_product")),
        Mistake("d_k_for_values", "d_k is used for the values' width",
                "weights @ V costs 2*n*m*d_v: the values have width d_v", _flops("dk_twice")),
        Mistake("square_in_queries", "n_queries is used for the number of keys",
                "the score matrix is n_queries x n_keys", _flops("square")),
    ],
    "quiz_sqrt_dk": [],
}
