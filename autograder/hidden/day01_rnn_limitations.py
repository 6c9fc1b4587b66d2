"""Days 1-2, instructor only: hidden cases, and the mistakes students make, as code.

Never shipped to students. The release carries only these mistakes' outputs
on the public cases (as data), so the student's check can name them too.
"""
from __future__ import annotations

import numpy as np

from ..exercise import Case, Mistake
from ..exercises.day01_rnn_limitations import recurrent_matrix, rnn_inputs, state_inputs


def rnn_hidden(rng):
    return [
        Case("single-step", rnn_inputs(rng, 1, 3, 4, 2), "T=1"),
        Case("single-step-single-sequence", rnn_inputs(rng, 1, 1, 3, 5), "T=1, B=1"),
        Case("batch-of-one", rnn_inputs(rng, 7, 1, 4, 3), "B=1"),
        Case("wide-input", rnn_inputs(rng, 6, 2, 10, 3), "D=10 > H=3"),
        Case("hidden-size-1", rnn_inputs(rng, 5, 4, 2, 1), "H=1"),
        Case("square-long", rnn_inputs(rng, 12, 2, 6, 6, radius=1.1), "D == H, twelve steps"),
        Case("saturating", rnn_inputs(rng, 6, 3, 4, 5, x_scale=10.0), "inputs that push tanh to +-1"),
        Case("long-expanding", rnn_inputs(rng, 60, 2, 3, 8, x_scale=0.1, radius=1.5), "T=60, spectral radius 1.5"),
    ]


def _rnn_states(rng, T, H, radius, x_scale=1.0, D=3):
    """One sequence's states from a real tanh RNN, and its W_hh."""
    W_hh = recurrent_matrix(rng, H, radius)
    W_xh = rng.standard_normal((D, H)) / np.sqrt(D)
    b = 0.3 * rng.standard_normal(H)
    h = 0.5 * rng.standard_normal(H)
    hs = []
    for x_t in x_scale * rng.standard_normal((T, D)):
        h = np.tanh(x_t @ W_xh + h @ W_hh + b)
        hs.append(h)
    return {"hs": np.stack(hs), "W_hh": W_hh}


def norms_hidden(rng):
    return [
        Case("single-state", _rnn_states(rng, 1, 4, 0.9), "T=1: only norms[0] = 1"),
        Case("two-states", _rnn_states(rng, 2, 3, 1.2), "T=2"),
        Case("hidden-size-1", _rnn_states(rng, 7, 1, 0.9), "H=1"),
        Case("saturated", _rnn_states(rng, 15, 6, 1.2, x_scale=10.0), "states near +-1"),
        Case("rnn-radius-0.9", _rnn_states(rng, 25, 8, 0.9), "RNN states, spectral radius 0.9"),
        Case("rnn-radius-1", _rnn_states(rng, 40, 8, 1.0, x_scale=0.1), "RNN states, spectral radius 1, small inputs"),
        Case("rnn-radius-2", _rnn_states(rng, 50, 10, 2.0, x_scale=0.05), "RNN states, spectral radius 2"),
        Case("exploding", state_inputs(rng, 40, 6, 1.5, spread=0.05), "small states, spectral radius 1.5, T=40"),
        Case("long-vanishing", _rnn_states(rng, 120, 16, 0.8), "T=120, spectral radius 0.8"),
    ]


HIDDEN_CASES = {
    "rnn_forward": rnn_hidden,
    "hidden_gradient_norms": norms_hidden,
    "quiz_rnn_long_range": lambda rng: [],
}


def _rnn(activation="tanh", recurrence="previous", order="rows", bias=True, output="states"):
    """A family of RNN forward passes, each with one deliberate deviation."""
    act = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0), "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a))}

    def rnn_forward(x, h0, W_xh, W_hh, b):
        W_in = W_xh.T if order == "columns" else W_xh  # the column-vector formula W x, read with row vectors
        W_rec = W_hh.T if order in ("columns", "W_hh") else W_hh
        h = np.zeros_like(h0) if recurrence == "zeros" else h0
        hs = [h0] if output in ("with_h0", "shifted") else []
        for x_t in x:
            previous = h0 if recurrence == "h0" else h
            h = act[activation](x_t @ W_in + previous @ W_rec + (b if bias else 0.0))
            hs.append(h)
        if output == "shifted":
            hs = hs[:-1]
        if output == "last":
            return h
        return np.stack(hs, axis=1 if output == "batch_first" else 0)

    return rnn_forward


RNN_MISTAKES = [
    Mistake("includes_h0", "h0 is returned as well (T+1 states)",
            "return only the T new states h_0 ... h_{T-1}: start from an empty list, not [h0]",
            _rnn(output="with_h0")),
    Mistake("starts_with_h0", "hs[0] is h0 and every state is one step late",
            "hs[t] must be the state computed from x[t]: append after the update, and do not put h0 in the output",
            _rnn(output="shifted")),
    Mistake("no_recurrence", "every step uses h0 instead of the previous hidden state",
            "carry the state: h = tanh(x[t] @ W_xh + h @ W_hh + b), with h updated at every step",
            _rnn(recurrence="h0")),
    Mistake("h0_ignored", "the initial state h0 is ignored (the loop starts from zeros)",
            "start the recurrence from the given h0, not np.zeros", _rnn(recurrence="zeros")),
    Mistake("W_hh_transposed", "W_hh is applied as W_hh @ h (the column-vector convention)",
            "with a batch of row vectors the state comes first: h @ W_hh (h is (B, H), W_hh is (H, H))",
            _rnn(order="W_hh")),
    Mistake("column_convention", "the weights multiply from the left, as in W x (or are transposed)",
            "x[t] has shape (B, D) and W_xh (D, H): x[t] @ W_xh gives (B, H); likewise h @ W_hh",
            _rnn(order="columns")),
    Mistake("no_bias", "the bias b is missing", "add b inside the tanh: tanh(x[t] @ W_xh + h @ W_hh + b)",
            _rnn(bias=False)),
    Mistake("relu", "ReLU is used instead of tanh", "this RNN uses np.tanh as its nonlinearity", _rnn(activation="relu")),
    Mistake("sigmoid", "the sigmoid is used instead of tanh", "this RNN uses np.tanh as its nonlinearity",
            _rnn(activation="sigmoid")),
    Mistake("last_state_only", "only the last hidden state is returned",
            "return every state, stacked into shape (T, B, H): np.stack(hs)", _rnn(output="last")),
    Mistake("batch_first", "the states are stacked batch first, (B, T, H)",
            "stack along a new first axis, time: np.stack(hs) or np.stack(hs, axis=0)", _rnn(output="batch_first")),
]


def _norms(norm="spectral", derivative="h_next", weights="W_hh.T", accumulate="right", span="exact",
           reverse=False):
    """A family of gradient-norm computations, each with one deliberate deviation."""

    def hidden_gradient_norms(hs, W_hh):
        T, H = hs.shape
        W = {"W_hh.T": W_hh.T, "W_hh": W_hh}[weights]

        def step(k):  # d h_k / d h_{k-1}, as this variant computes it
            if derivative == "none":
                return W.copy()
            h = {"h_next": hs[k], "h_prev": hs[k - 1] if k > 0 else np.zeros(H),
                 "tanh_again": np.tanh(hs[k])}[derivative]
            return (1.0 - h ** 2)[:, None] * W

        size = {"spectral": lambda m: np.linalg.norm(m, ord=2), "frobenius": np.linalg.norm}[norm]
        norms = np.empty(T)
        for t in range(T):
            first = {"exact": t + 1, "extra": t, "short": t + 2}[span]  # the factors are J_{T-1} ... J_first
            jac = np.eye(H)
            for k in range(T - 1, first - 1, -1):
                jac = jac @ step(k) if accumulate == "right" else step(k) @ jac
            norms[t] = size(jac)
        return norms[::-1].copy() if reverse else norms

    return hidden_gradient_norms


NORMS_MISTAKES = [
    Mistake("frobenius_norm", "the Frobenius norm is used instead of the spectral norm",
            "the spectral norm is the largest singular value: np.linalg.norm(M, ord=2) "
            "(np.linalg.norm(M) alone is the Frobenius norm; note norms[T-1] must be 1)", _norms(norm="frobenius")),
    Mistake("no_tanh_derivative", "the factor diag(1 - h^2) is missing",
            "each step's Jacobian is diag(1 - h_{t+1}^2) @ W_hh.T: the tanh derivative belongs in every factor",
            _norms(derivative="none")),
    Mistake("W_hh_not_transposed", "W_hh is used where the Jacobian needs W_hh.T",
            "with h_t = tanh(h_{t-1} @ W_hh + ...), d h_t / d h_{t-1} = diag(1 - h_t^2) @ W_hh.T",
            _norms(weights="W_hh")),
    Mistake("reversed_order", "the norms are in reverse order (norms[0] = 1)",
            "norms[t] belongs to h_t: norms[T-1] = 1 and norms[0] is the longest path", _norms(reverse=True)),
    Mistake("one_factor_too_many", "the product has one Jacobian too many (norms[T-1] is not 1)",
            "d h_{T-1} / d h_t = J_{T-1} ... J_{t+1}: T-1-t factors, and the identity for t = T-1",
            _norms(span="extra")),
    Mistake("one_factor_too_few", "the product has one Jacobian too few",
            "d h_{T-1} / d h_t = J_{T-1} ... J_{t+1}: T-1-t factors, the last one being J_{t+1}",
            _norms(span="short")),
    Mistake("derivative_at_previous_state", "the tanh derivative uses the earlier state h_t instead of h_{t+1}",
            "the step from h_t to h_{t+1} has Jacobian diag(1 - h_{t+1}^2) @ W_hh.T: the derivative is taken "
            "at the state the step produces", _norms(derivative="h_prev")),
    Mistake("tanh_applied_again", "the tanh derivative is computed as 1 - tanh(h)^2 from the states",
            "hs already holds tanh outputs, so the derivative is simply 1 - h**2", _norms(derivative="tanh_again")),
    Mistake("product_order_reversed", "the Jacobians are multiplied in the wrong order (or each one is transposed)",
            "the product is J_{T-1} ... J_{t+1} with J_k = diag(1 - h_k^2) @ W_hh.T: add each new factor on the "
            "right, jac = jac @ J_{t+1} (the factor nearest to h_t comes last); a transposed factor "
            "W_hh @ diag(1 - h_k^2), which is (1 - h_k**2) * W_hh, comes to the same as the reversed order",
            _norms(accumulate="left")),
    Mistake("W_hh_not_transposed_order_reversed",
            "W_hh is used where the Jacobian needs W_hh.T, and the factors are multiplied in the other order",
            "with h_t = tanh(h_{t-1} @ W_hh + ...), J_k = diag(1 - h_k^2) @ W_hh.T, that is "
            "(1 - h_k**2)[:, None] * W_hh.T (rows scaled), not W_hh.T * (1 - h_k**2) (columns scaled); and the "
            "product is J_{T-1} ... J_{t+1}: jac = jac @ J_{t+1}", _norms(weights="W_hh", accumulate="left")),
]

MISTAKES = {
    "rnn_forward": RNN_MISTAKES,
    "hidden_gradient_norms": NORMS_MISTAKES,
    "quiz_rnn_long_range": [],
}
