"""Days 1-2 exercises: how each item is called, and its public cases."""
from __future__ import annotations

import numpy as np

from ..exercise import Case, Exercise, StudentError


def recurrent_matrix(rng, size, radius):
    """A random (size, size) matrix rescaled to the given spectral radius."""
    w = rng.standard_normal((size, size))
    return w * (radius / np.abs(np.linalg.eigvals(w)).max())


def rnn_inputs(rng, T, B, D, H, x_scale=1.0, radius=0.9):
    """Random arguments of rnn_forward: x (T, B, D), h0 (B, H), W_xh (D, H), W_hh (H, H), b (H,)."""
    return {
        "x": x_scale * rng.standard_normal((T, B, D)),
        "h0": 0.5 * rng.standard_normal((B, H)),
        "W_xh": rng.standard_normal((D, H)) / np.sqrt(D),
        "W_hh": recurrent_matrix(rng, H, radius),
        "b": 0.5 * rng.standard_normal(H),
    }


def state_inputs(rng, T, H, radius, spread=1.0):
    """Arguments of hidden_gradient_norms: states hs (T, H) in (-1, 1) and W_hh (H, H)."""
    return {"hs": np.tanh(spread * rng.standard_normal((T, H))), "W_hh": recurrent_matrix(rng, H, radius)}


def _array_result(result, name, shape):
    """The student's returned array, or a message that says what to return instead."""
    if type(result) in (list, tuple):
        raise StudentError(
            f"should return one numpy array {name} of shape {shape}, got a {type(result).__name__} "
            f"of {len(result)}; turn it into an array (np.stack / np.array)"
        )
    return result


def run_rnn(fn, inputs):
    hs = fn(inputs["x"], inputs["h0"], inputs["W_xh"], inputs["W_hh"], inputs["b"])
    return {"hs": _array_result(hs, "hs", "(T, B, H)")}


def rnn_public(rng):
    return [
        Case("small", rnn_inputs(rng, 5, 2, 3, 4), "T=5, B=2, D=3, H=4"),
        Case("square-weights", rnn_inputs(rng, 4, 3, 5, 5), "D == H: a transposed W_xh does not crash here"),
        Case("one-sequence", rnn_inputs(rng, 8, 1, 2, 6, radius=1.2), "B=1, eight steps, D != H"),
    ]


def run_norms(fn, inputs):
    norms = fn(inputs["hs"], inputs["W_hh"])
    return {"norms": _array_result(norms, "norms", "(T,)")}


def norms_public(rng):
    return [
        Case("contracting", state_inputs(rng, 8, 4, 0.8), "spectral radius 0.8, T=8, H=4"),
        Case("expanding", state_inputs(rng, 10, 5, 1.5, spread=0.5), "spectral radius 1.5, T=10, H=5"),
        Case("radius-1-long", state_inputs(rng, 30, 6, 1.0), "spectral radius 1, T=30, H=6"),
    ]


def run_quiz(answer, inputs):
    return {"answer": answer}


EXERCISES = [
    Exercise("rnn_forward", run_rnn, rnn_public),
    Exercise("hidden_gradient_norms", run_norms, norms_public),
    Exercise("quiz_rnn_long_range", run_quiz, lambda rng: [Case("answer", {})], kind="quiz",
             choices=("A", "B", "C", "D")),
]
