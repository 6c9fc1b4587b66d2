"""Days 3-5 exercises: how each item is called, and its public cases.

Everything here is NumPy in float64. `attention` is called with score
functions of the grader's own (probes) rather than with the course's scores,
so that it is graded on its own: a probe checks that it is called as
`score_fn(query, keys)` and never gives away another item's answer.

`hand_attention` is a hand computation on one fixed example: its answer is a
dict of numbers, graded like a quiz answer. The student's check confirms its
form only (which keys, how many numbers, weights that are a distribution);
the grader compares the values with the reference, within a tolerance meant
for numbers rounded by hand, and names the known mistakes
(autograder/hidden/day03_attention_mechanism.py).
"""
from __future__ import annotations

import numpy as np

from ..exercise import UNANSWERED, Case, Exercise, StudentError, expect_tuple

# --- softmax ---------------------------------------------------------------

def run_softmax(fn, inputs):
    x = inputs["x"]
    y = fn(x) if inputs.get("axis") is None else fn(x, axis=inputs["axis"])
    return {"y": y}


def softmax_case(name, x, axis=None, note=""):
    inputs = {"x": np.asarray(x, dtype=np.float64)}
    if axis is not None:
        inputs["axis"] = axis
    return Case(name, inputs, note)


def with_minus_inf(rng, shape, axis=-1, frac=0.4):
    """Random logits with some entries set to -inf, every slice along `axis` keeping a finite one."""
    x = rng.standard_normal(shape) * 3
    hole = rng.random(shape) < frac
    np.moveaxis(hole, axis, -1)[..., 0] = False  # (..., n) view: the first entry of each slice stays finite
    x[hole] = -np.inf
    return x


def scales_apart(rng, shape, axis=-1):
    """Logits whose slices live on very different scales: one slice is around +-1e4, the others near 0."""
    x = rng.standard_normal(shape)
    slices = np.moveaxis(x, axis, -1)  # (..., n) view
    first = slices[(0,) * (slices.ndim - 1)]  # (n,) view of the first slice
    first[:] = np.linspace(1e4, -1e4, first.size)
    first[1] = 1e4 - 1.0
    return x


def softmax_public(rng):
    return [
        softmax_case("vector", rng.standard_normal(6) * 2, note="one vector of 6 logits"),
        softmax_case("rows", rng.standard_normal((3, 5)), note="a (3, 5) matrix, default axis=-1 (each row sums to 1)"),
        softmax_case("square-rows", rng.standard_normal((4, 4)), note="a square matrix, default axis"),
        softmax_case("axis-0", rng.standard_normal((4, 3)), axis=0, note="axis=0: each column sums to 1"),
        softmax_case("large-logits", scales_apart(rng, (2, 4)),
                     note="one row of logits around +-1e4, the other near 0"),
        softmax_case("minus-inf", with_minus_inf(rng, (3, 5)), note="some logits are -inf (weight exactly 0)"),
    ]


# --- score functions -------------------------------------------------------

def run_dot(fn, inputs):
    return {"scores": fn(inputs["query"], inputs["keys"])}


def run_multiplicative(fn, inputs):
    return {"scores": fn(inputs["query"], inputs["keys"], inputs["W"])}


def run_additive(fn, inputs):
    return {"scores": fn(inputs["query"], inputs["keys"], inputs["W_q"], inputs["W_k"], inputs["v"])}


def dot_inputs(rng, n, d, scale=1.0):
    return {"query": rng.standard_normal(d) * scale, "keys": rng.standard_normal((n, d)) * scale}


def multiplicative_inputs(rng, n, d_q, d_k):
    return {"query": rng.standard_normal(d_q), "keys": rng.standard_normal((n, d_k)),
            "W": rng.standard_normal((d_q, d_k))}


def additive_inputs(rng, n, d_q, d_k, h, scale=1.0):
    return {"query": rng.standard_normal(d_q), "keys": rng.standard_normal((n, d_k)),
            "W_q": rng.standard_normal((h, d_q)) * scale, "W_k": rng.standard_normal((h, d_k)) * scale,
            "v": rng.standard_normal(h)}


# --- attention -------------------------------------------------------------

def _probe(kind, inputs):
    """A score function of the grader's, which insists on being called as score_fn(query, keys)."""
    q, k = inputs["query"], inputs["keys"]

    def score_fn(query, keys):
        if np.shape(query) != q.shape or np.shape(keys) != k.shape:
            raise StudentError(
                f"score_fn was called with arguments of shapes {np.shape(query)} and {np.shape(keys)}; "
                f"call it as score_fn(query, keys), with query {q.shape} and keys {k.shape}"
            )
        if kind == "fixed":  # given scores, whatever the vectors
            return np.array(inputs["scores"], dtype=np.float64)
        if kind == "distance":  # negative squared Euclidean distance: nearer keys score higher
            return -np.sum((np.asarray(keys) - np.asarray(query)) ** 2, axis=-1)
        raise ValueError(kind)

    return score_fn


def run_attention(fn, inputs):
    score_fn = _probe(inputs["score"], inputs)
    result = fn(inputs["query"], inputs["keys"], inputs["values"], score_fn=score_fn)
    context, weights = expect_tuple(result, ("context", "weights"))
    return {"context": context, "weights": weights}


def attention_inputs(rng, n, d, d_v, score="distance", scores=None):
    inputs = {"query": rng.standard_normal(d), "keys": rng.standard_normal((n, d)),
              "values": rng.standard_normal((n, d_v)), "score": score}
    if score == "fixed":
        inputs["scores"] = np.asarray(scores if scores is not None else rng.standard_normal(n) * 2, dtype=np.float64)
    return inputs


def attention_public(rng):
    return [
        Case("distance-score", attention_inputs(rng, 5, 3, 2),
             "score_fn = negative squared distance (any score function must work), 5 keys, d_v=2"),
        Case("fixed-scores", attention_inputs(rng, 4, 3, 6, "fixed"),
             "a score_fn that returns given scores; 4 keys, d_v=6"),
        Case("large-scores", attention_inputs(rng, 4, 2, 3, "fixed", [1e4, -1e4, 1e4 - 2.0, 0.0]),
             "scores of +-1e4"),
        Case("single-event", attention_inputs(rng, 1, 4, 3), "n = 1: one key, so its weight is 1"),
    ]


# --- plot_attention --------------------------------------------------------

def _tick_texts(axis) -> list[str]:
    """The tick labels an axis shows, on one side (bottom/left, else top/right), in tick order."""
    axis.get_majorticklabels()  # makes the axis update its ticks' texts
    ticks = axis.get_major_ticks()
    first = [str(t.label1.get_text()) for t in ticks if t.label1.get_visible()]
    return first or [str(t.label2.get_text()) for t in ticks if t.label2.get_visible()]


def figure_data(fig) -> dict:
    """Plain data read off an attention figure: image, tick labels, and whether it has a colorbar."""
    import matplotlib.figure

    if type(fig) is not matplotlib.figure.Figure:
        hint = " (return the Figure: fig, ax = plt.subplots() ... return fig)" if hasattr(fig, "figure") else ""
        raise StudentError(f"should return a matplotlib.figure.Figure, got {type(fig).__name__}{hint}")
    fig.canvas.draw()
    colorbars = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    with_images = [ax for ax in fig.axes if ax.images and ax not in colorbars]
    if not with_images:
        raise StudentError("the figure shows no image: draw the weights with ax.imshow(weights) or ax.matshow(weights)")
    if len(with_images) > 1:
        raise StudentError(f"the figure has {len(with_images)} Axes with images; draw the weights on one Axes")
    ax = with_images[0]
    if len(ax.images) > 1:
        raise StudentError(f"the Axes holds {len(ax.images)} images; draw the weights once")
    image = np.array(np.ma.getdata(ax.images[0].get_array()), dtype=np.float64)
    return {
        "image": image,
        "y_tick_labels": _tick_texts(ax.yaxis),
        "x_tick_labels": _tick_texts(ax.xaxis),
        "colorbar": bool(colorbars),
    }


def run_plot(fn, inputs):
    import matplotlib.figure
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    fig = None  # closed below, with any other figure the call opened
    try:
        fig = fn(np.array(inputs["weights"]), list(inputs["query_labels"]), list(inputs["key_labels"]))
        return figure_data(fig)
    finally:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)
        if type(fig) is matplotlib.figure.Figure:
            plt.close(fig)


def random_weights(rng, n_q, n_k, sharpness=2.0):
    """Rows of attention weights (each sums to 1)."""
    x = rng.standard_normal((n_q, n_k)) * sharpness
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


SYMPTOMS = ["cough + fever", "chest pain", "knee pain", "thirst + fatigue", "wheezing", "headache",
            "rash", "shortness of breath"]
EVENTS = ["2012 asthma diagnosis", "2014 knee surgery", "2016 flu", "2017 high blood pressure",
          "2018 pneumonia", "2019 sprained ankle", "2020 type 2 diabetes", "2021 bronchitis",
          "2022 migraine", "2023 chest X-ray", "2023 statins started", "2024 allergy test"]


def plot_case(rng, name, n_q, n_k, note=""):
    q = [str(s) for s in rng.permutation(SYMPTOMS)[:n_q]]
    k = [str(s) for s in rng.permutation(EVENTS)[:n_k]]
    return Case(name, {"weights": random_weights(rng, n_q, n_k), "query_labels": q, "key_labels": k}, note)


def plot_public(rng):
    return [
        plot_case(rng, "three-queries", 3, 6, "3 symptom queries over 6 past events"),
        plot_case(rng, "one-query", 1, 5, "a single query row"),
        plot_case(rng, "square", 4, 4, "4 queries, 4 keys"),
    ]


# --- hand_attention: one example, computed by hand ---------------------------

HAND_EXAMPLE = {
    "query": [1.0, 0.5],  # (d,) = (2,): "a cough, and a little knee pain" as (respiratory, joints)
    "keys": [[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]],  # (n, d) = (3, 2): asthma, knee surgery, bronchitis
    "values": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]],  # (n, d_v) = (3, 2): (hospitalised, long-term medication)
}
"""The notebook's hand computation, its inputs only (the answer is never in a public file)."""

HAND_LENGTHS = {"scores": 3, "weights": 3, "context": 2}
"""How many numbers each entry of the answer holds: one score and one weight per event, one context per outcome."""

HAND_TOLERANCE = 0.01
"""Largest difference from the exact value accepted for a number computed by hand (rounding on the way)."""

HAND_SUM_TOLERANCE = 0.02
"""How far from 1 hand-rounded weights may sum (three numbers rounded to two decimals: at most 0.015)."""


def _hand_numbers(value, name: str) -> np.ndarray:
    """The numbers of one entry of the answer as a float64 array (n,), or a StudentError saying what is wrong."""
    n = HAND_LENGTHS[name]
    where = f"hand_attention[{name!r}]"
    if type(value) not in (list, tuple, np.ndarray):
        raise StudentError(f"{where} should be a list of {n} numbers, got {type(value).__name__}")
    items = list(value.ravel()) if type(value) is np.ndarray else list(value)
    if len(items) != n or (type(value) is np.ndarray and value.ndim != 1):
        raise StudentError(f"{where} should hold {n} numbers, one per {'outcome' if name == 'context' else 'event'}"
                           f", in the order of the table; got {len(items)}")
    if any(x is None for x in items):
        raise StudentError(f"{UNANSWERED} in {where}: fill in your {n} numbers")
    numbers = []
    for x in items:
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
            raise StudentError(f"{where} should hold plain numbers (e.g. 0.506), got {type(x).__name__}")
        numbers.append(float(x))
    array = np.array(numbers, dtype=np.float64)  # (n,)
    if not np.isfinite(array).all():
        raise StudentError(f"{where} holds a NaN or an infinite number")
    return array


def run_hand(answer, inputs):
    """One case per entry (scores, weights, context), so that each earns its share of the points.

    Checks the form only; the values are compared with the key (the grader's, never shipped).
    """
    name = inputs["entry"]
    if type(answer) is not dict:
        raise StudentError(f"hand_attention should be a dict with the keys 'scores', 'weights' and 'context', "
                           f"got {type(answer).__name__}")
    if name not in answer:
        unknown = [repr(k) for k in answer if k not in HAND_LENGTHS]
        raise StudentError(f"the dict has no key {name!r}" + (f" (unknown keys: {', '.join(unknown)})" if unknown else ""))
    array = _hand_numbers(answer[name], name)
    if name == "weights":
        if (array < 0).any():
            raise StudentError("a weight is negative; softmax weights are exponentials divided by their sum, "
                               "so never negative")
        if abs(array.sum() - 1.0) > HAND_SUM_TOLERANCE:
            raise StudentError(f"the weights sum to {array.sum():.3f}; softmax weights sum to 1 (divide each "
                               "exponential by the sum of all three)")
    return {name: array}


def hand_public(rng):
    tolerance = (0.0, HAND_TOLERANCE)
    return [
        Case("scores", {"entry": "scores"}, "the three dot scores, one per event", tolerance),
        Case("weights", {"entry": "weights"}, "the softmax of the scores: three weights summing to 1", tolerance),
        Case("context", {"entry": "context"}, "the weighted average of the values: one number per outcome",
             tolerance),
    ]


EXERCISES = [
    Exercise("softmax", run_softmax, softmax_public),
    Exercise("dot_score", run_dot, lambda rng: [
        Case("basic", dot_inputs(rng, 6, 4), "6 keys of dimension 4"),
        Case("square", dot_inputs(rng, 3, 3), "as many keys as dimensions"),
        Case("single-key", dot_inputs(rng, 1, 5), "n = 1"),
    ]),
    Exercise("multiplicative_score", run_multiplicative, lambda rng: [
        Case("non-square-W", multiplicative_inputs(rng, 4, 3, 5), "d_q=3, d_k=5: W is (3, 5)"),
        Case("square-W", multiplicative_inputs(rng, 6, 4, 4), "d_q = d_k = 4, W not symmetric"),
        Case("single-key", multiplicative_inputs(rng, 1, 2, 3), "n = 1"),
    ]),
    Exercise("additive_score", run_additive, lambda rng: [
        Case("all-dims-differ", additive_inputs(rng, 6, 3, 5, 4), "d_q=3, d_k=5, hidden size h=4"),
        Case("square", additive_inputs(rng, 4, 4, 4, 4), "d_q = d_k = h = n = 4"),
        Case("single-key", additive_inputs(rng, 1, 2, 3, 5), "n = 1"),
    ]),
    Exercise("attention", run_attention, attention_public, needs=("softmax", "dot_score")),
    # Answered like a quiz (a value, not a function): the public check sees the form, the grader the values.
    Exercise("hand_attention", run_hand, hand_public, kind="quiz"),
    Exercise("plot_attention", run_plot, plot_public),
]
