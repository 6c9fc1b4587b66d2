"""Days 3-5, instructor only: hidden cases, and the mistakes students make, as code.

Never shipped to students. The release carries only these mistakes' outputs
on the public cases (as data), so the student's check can name them too.
"""
from __future__ import annotations

import numpy as np

from ..exercise import Case, Mistake
from ..exercises.day03_attention_mechanism import (
    HAND_EXAMPLE, additive_inputs, attention_inputs, dot_inputs, multiplicative_inputs, plot_case, scales_apart,
    softmax_case, with_minus_inf,
)


def softmax_hidden(rng):
    big_negative = -1e4 + rng.standard_normal((2, 3))
    return [
        softmax_case("single-entry", rng.standard_normal(1), note="n = 1"),
        softmax_case("one-column", rng.standard_normal((4, 1)), note="n = 1 along the default axis"),
        softmax_case("3d-axis-1", rng.standard_normal((2, 3, 4)), axis=1),
        softmax_case("3d-axis-0", rng.standard_normal((3, 2, 4)), axis=0),
        softmax_case("3d-axis-minus-2", rng.standard_normal((2, 5, 3)), axis=-2),
        softmax_case("4d-default", rng.standard_normal((2, 2, 3, 4))),
        softmax_case("square-hidden", rng.standard_normal((5, 5)) * 3),
        softmax_case("large-axis-0", scales_apart(rng, (4, 3), axis=0), axis=0),
        softmax_case("large-3d", scales_apart(rng, (2, 3, 5))),
        softmax_case("all-large-negative", big_negative, note="every logit near -1e4"),
        softmax_case("minus-inf-axis-0", with_minus_inf(rng, (5, 3), axis=0), axis=0),
        softmax_case("minus-inf-and-large", np.array([[-np.inf, 1e4, -1e4, 9990.0], [0.0, -np.inf, -np.inf, 1.0]])),
        softmax_case("constant-rows", np.full((3, 4), 2.5), note="equal logits give uniform weights"),
        softmax_case("wide", rng.standard_normal((2, 50)) * 10),
    ]


def attention_hidden(rng):
    return [
        Case("minus-inf-scores", attention_inputs(rng, 5, 3, 4, "fixed", [0.5, -np.inf, 2.0, -np.inf, -1.0])),
        Case("long-history", attention_inputs(rng, 50, 6, 3)),
        Case("square-values", attention_inputs(rng, 3, 2, 3), note="n = d_v"),
        Case("single-event-hidden", attention_inputs(rng, 1, 2, 1, "fixed", [7.0])),
        Case("equal-scores", attention_inputs(rng, 4, 3, 2, "fixed", [3.0, 3.0, 3.0, 3.0])),
        Case("huge-scores", attention_inputs(rng, 3, 3, 5, "fixed", [-2e4, -1e4, -1.5e4])),
        Case("wide-values", attention_inputs(rng, 6, 4, 10, "fixed")),
    ]


HIDDEN_CASES = {
    "softmax": softmax_hidden,
    "dot_score": lambda rng: [
        Case("one-dimension", dot_inputs(rng, 4, 1), note="d = 1"),
        Case("square-hidden", dot_inputs(rng, 5, 5)),
        Case("long-history", dot_inputs(rng, 200, 8)),
        Case("one-key-one-dim", dot_inputs(rng, 1, 1)),
        Case("large-values", dot_inputs(rng, 7, 3, scale=1e3)),
    ],
    "multiplicative_score": lambda rng: [
        Case("tall-W", multiplicative_inputs(rng, 5, 6, 2), note="d_q=6, d_k=2"),
        Case("square-W-hidden", multiplicative_inputs(rng, 3, 3, 3)),
        Case("identity-W", dict(multiplicative_inputs(rng, 4, 4, 4), W=np.eye(4)), note="W = I gives the dot score"),
        Case("long-history", multiplicative_inputs(rng, 100, 4, 7)),
        Case("n-equals-d_q", multiplicative_inputs(rng, 3, 3, 5)),
    ],
    "additive_score": lambda rng: [
        Case("wide-hidden", additive_inputs(rng, 5, 2, 3, 16)),
        Case("square-hidden", additive_inputs(rng, 7, 3, 3, 3)),
        Case("saturated", additive_inputs(rng, 4, 3, 2, 5, scale=10.0), note="tanh saturates"),
        Case("long-history", additive_inputs(rng, 100, 4, 6, 8)),
        Case("hidden-size-1", additive_inputs(rng, 3, 2, 2, 1)),
    ],
    "attention": attention_hidden,
    # One fixed example computed by hand: no other cases make sense. Its three public cases (scores, weights,
    # context) are graded on their values, like a quiz's: the key of a quiz item is never public, so students
    # see only whether their answer has the right form until grades are published.
    "hand_attention": lambda rng: [],
    "plot_attention": lambda rng: [
        plot_case(rng, "wide", 2, 12),
        plot_case(rng, "tall", 6, 3),
        plot_case(rng, "square-hidden", 3, 3),
        plot_case(rng, "one-by-one", 1, 1),
    ],
}


# --- softmax mistakes --------------------------------------------------------

def _softmax(kind):
    def softmax(x, axis=-1):
        x = np.asarray(x, dtype=np.float64)
        if kind == "no_max":
            e = np.exp(x)
            return e / e.sum(axis=axis, keepdims=True)
        if kind == "global_max":
            e = np.exp(x - x.max())
            return e / e.sum(axis=axis, keepdims=True)
        if kind == "last_axis":
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)
        if kind == "whole_array":
            e = np.exp(x - x.max())
            return e / e.sum()
        if kind == "no_keepdims":
            e = np.exp(x - x.max(axis=axis, keepdims=True))
            return e / e.sum(axis=axis)
        if kind == "no_exp":
            return x / x.sum(axis=axis, keepdims=True)
        raise ValueError(kind)

    return softmax


SOFTMAX_MISTAKES = [
    Mistake("no_max_subtraction", "softmax without subtracting the maximum (exp overflows)",
            "np.exp(1e4) is inf and inf/inf is nan: subtract x.max(axis=axis, keepdims=True) before np.exp; "
            "softmax does not change when every logit in a slice moves by the same amount", _softmax("no_max")),
    Mistake("global_max", "the maximum of the whole array is subtracted, not each slice's",
            "a slice far below the global maximum underflows to 0/0; use x.max(axis=axis, keepdims=True)",
            _softmax("global_max")),
    Mistake("ignores_axis", "the softmax always runs over the last axis (the axis argument is ignored)",
            "pass axis=axis to both the max and the sum", _softmax("last_axis")),
    Mistake("whole_array", "the softmax normalises over the whole array",
            "sum over one axis only: e.sum(axis=axis, keepdims=True)", _softmax("whole_array")),
    Mistake("no_keepdims", "the sum is taken without keepdims=True, so it broadcasts along the wrong axis",
            "e.sum(axis=axis, keepdims=True) keeps the summed axis with size 1, so each slice is divided by its own sum",
            _softmax("no_keepdims")),
    Mistake("no_exp", "the logits are divided by their sum without np.exp",
            "softmax is exp(x_i) / sum_j exp(x_j): exponentiate (after subtracting the max) before normalising",
            _softmax("no_exp")),
]


# --- score mistakes ----------------------------------------------------------

def _dot(kind):
    def dot_score(query, keys):
        if kind == "not_transposed":
            return query @ keys
        if kind == "no_sum":
            return keys * query
        if kind == "scaled":
            return keys @ query / np.sqrt(query.shape[-1])
        raise ValueError(kind)

    return dot_score


def _multiplicative_transposed(query, keys, W):
    return keys @ W @ query  # k^T W q = q^T W^T k


def _additive(kind):
    def additive_score(query, keys, W_q, W_k, v):
        if kind == "weights_not_transposed":
            return np.tanh(keys @ W_k + query @ W_q) @ v
        pre = keys @ W_k.T + W_q @ query  # (n, h)
        if kind == "no_tanh":
            return pre @ v
        if kind == "tanh_outside":
            return np.tanh(pre @ v)
        if kind == "no_v_sum":
            return np.tanh(pre).sum(axis=-1)
        if kind == "no_v_matrix":
            return np.tanh(pre)
        raise ValueError(kind)

    return additive_score


# --- attention mistakes ------------------------------------------------------

def _stable_softmax(x):
    e = np.exp(x - np.max(x))
    return e / e.sum()


def _attention(kind):
    def attention(query, keys, values, score_fn=None):
        scores = keys @ query if kind == "ignores_score_fn" else score_fn(query, keys)
        weights = scores if kind == "no_softmax" else _stable_softmax(scores)
        if kind == "context_from_keys":
            return weights @ keys, weights
        if kind == "not_summed":
            return weights[:, None] * values, weights
        context = weights @ values
        if kind == "swapped":
            return weights, context
        return context, weights

    return attention


# --- hand_attention mistakes -------------------------------------------------

def _hand(kind):
    """The answer a student who makes this mistake by hand arrives at (exact; the grader allows for rounding)."""
    query = np.array(HAND_EXAMPLE["query"])  # (d,)
    keys = np.array(HAND_EXAMPLE["keys"])  # (n, d)
    values = np.array(HAND_EXAMPLE["values"])  # (n, d_v)
    scores = keys @ query  # (n,)
    if kind == "scaled":
        scores = scores / np.sqrt(query.size)
    if kind == "no_exp":
        weights = scores / scores.sum()
    elif kind == "hard_lookup":
        weights = (scores == scores.max()).astype(np.float64)  # (n,) one-hot on the best key
    else:
        weights = _stable_softmax(scores)
    context = weights @ (keys if kind == "context_from_keys" else values)  # (d_v,)
    return {"scores": scores.tolist(), "weights": weights.tolist(), "context": context.tolist()}


HAND_MISTAKES = [
    Mistake("no_exp", "the weights are the scores divided by their sum, without the exponential",
            "softmax exponentiates first: weight_j = exp(e_j) / (exp(e_1) + exp(e_2) + exp(e_3)); subtract the "
            "largest score before exponentiating and use the table of e^x", _hand("no_exp")),
    Mistake("context_from_keys", "the context mixes the keys instead of the values",
            "the keys only decide the weights; the context is the weighted sum of the values table: "
            "c = w_1 v_1 + w_2 v_2 + w_3 v_3", _hand("context_from_keys")),
    Mistake("hard_lookup", "only the best-matching event counts (weight 1 for it, 0 for the others)",
            "attention blends rather than picks: every event gets the weight exp(e_j) / sum_i exp(e_i), and the "
            "context averages all three values with those weights", _hand("hard_lookup")),
    Mistake("scaled", "the scores are divided by sqrt(d)",
            "the dot score of Days 3-5 is q . k_j, unscaled (dividing by sqrt(d_k) comes with Day 6's scaled "
            "dot-product attention)", _hand("scaled")),
]


# --- plot_attention mistakes -------------------------------------------------

def _plot(kind):
    def plot_attention(weights, query_labels, key_labels):
        import warnings

        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        im = ax.imshow(weights.T if kind == "transposed" else weights)
        ys, xs = (key_labels, query_labels) if kind == "swapped_labels" else (query_labels, key_labels)
        if kind == "ticks_not_set":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax.set_yticklabels(ys)
                ax.set_xticklabels(xs)
        else:
            ax.set_yticks(range(len(ys)), labels=ys)
            ax.set_xticks(range(len(xs)), labels=xs)
        if kind != "no_colorbar":
            fig.colorbar(im, ax=ax)
        return fig

    return plot_attention


MISTAKES = {
    "softmax": SOFTMAX_MISTAKES,
    "dot_score": [
        Mistake("keys_not_transposed", "query @ keys multiplies along the wrong axis of keys",
                "keys has shape (n, d): keys @ query (or query @ keys.T) gives the n scores", _dot("not_transposed")),
        Mistake("no_sum", "the products are not summed over the feature axis",
                "keys * query has shape (n, d); a dot product also sums: keys @ query", _dot("no_sum")),
        Mistake("scaled", "the scores are divided by sqrt(d)",
                "the plain dot score is not scaled (Day 6's scaled dot-product attention adds that)", _dot("scaled")),
    ],
    "multiplicative_score": [
        Mistake("W_transposed", "W is used transposed (query^T W^T k)",
                "W has shape (d_q, d_k): W maps a key into query space, so compute keys @ W.T @ query "
                "(equivalently (query @ W) @ keys.T)", _multiplicative_transposed),
    ],
    "additive_score": [
        Mistake("no_tanh", "tanh is missing", "the score is v^T tanh(W_q q + W_k k_j): apply np.tanh before v",
                _additive("no_tanh")),
        Mistake("tanh_outside", "tanh is applied after the projection onto v",
                "tanh goes on the hidden layer, inside: np.tanh(keys @ W_k.T + W_q @ query) @ v", _additive("tanh_outside")),
        Mistake("no_v_sum", "v is missing (the hidden units are summed instead)",
                "project the hidden layer onto v: np.tanh(...) @ v", _additive("no_v_sum")),
        Mistake("no_v_matrix", "v is missing (the (n, h) hidden layer is returned)",
                "project the hidden layer onto v to get one score per key: np.tanh(...) @ v", _additive("no_v_matrix")),
        Mistake("weights_not_transposed", "W_q and W_k are applied from the wrong side",
                "W_q is (h, d_q) and W_k is (h, d_k): use W_q @ query and keys @ W_k.T",
                _additive("weights_not_transposed")),
    ],
    "attention": [
        Mistake("ignores_score_fn", "attention ignores score_fn and always uses the dot product",
                "compute the scores with score_fn(query, keys), whatever function was passed", _attention("ignores_score_fn")),
        Mistake("swapped", "attention returns (weights, context) instead of (context, weights)",
                "return context, weights in that order", _attention("swapped")),
        Mistake("no_softmax", "the scores are used as weights without a softmax",
                "weights = softmax(scores): non-negative, summing to 1", _attention("no_softmax")),
        Mistake("context_from_keys", "the context mixes the keys instead of the values",
                "keys decide the weights, values are what is mixed: context = weights @ values",
                _attention("context_from_keys")),
        Mistake("not_summed", "the weighted values are not summed over the keys",
                "weights[:, None] * values has shape (n, d_v); the context is their sum: weights @ values",
                _attention("not_summed")),
    ],
    "hand_attention": HAND_MISTAKES,
    "plot_attention": [
        Mistake("transposed", "the image shows the weights transposed (keys down, queries across)",
                "imshow(weights) as is: row i (query i) becomes image row i, so queries run down the y axis",
                _plot("transposed")),
        Mistake("swapped_labels", "the tick labels are swapped (key labels on the y axis, query labels on the x axis)",
                "queries label the rows (y axis: set_yticks(range(n_q), labels=query_labels)) and keys the columns "
                "(x axis)", _plot("swapped_labels")),
        Mistake("ticks_not_set", "the tick labels were set without setting the tick positions",
                "set_xticklabels alone labels matplotlib's automatic ticks (-1, 0, 1, ...), shifting the labels; "
                "use ax.set_xticks(range(n_k), labels=key_labels) and the same for y", _plot("ticks_not_set")),
        Mistake("no_colorbar", "the figure has no colorbar", "add one: fig.colorbar(im, ax=ax), with im = ax.imshow(...)",
                _plot("no_colorbar")),
    ],
}
