"""Days 6-7 exercises: how each item is called, and its public cases."""
from __future__ import annotations

import numpy as np

from ..exercise import Case, Exercise, as_tensor, expect_tuple


def attention_inputs(rng, batch, lq, lk, d_k, d_v, dtype="float64", scale=1.0):
    """Random query, key and value of the given shapes."""
    return {
        "query": (rng.standard_normal((*batch, lq, d_k)) * scale).astype(dtype),
        "key": (rng.standard_normal((*batch, lk, d_k)) * scale).astype(dtype),
        "value": rng.standard_normal((*batch, lk, d_v)).astype(dtype),
    }


def random_mask(rng, shape, keep=0.7, empty_rows=()):
    """A boolean mask with at least one True per row, except the rows listed in `empty_rows`."""
    mask = rng.random(shape) < keep
    mask[..., 0] |= ~mask.any(axis=-1)
    for row in empty_rows:
        mask[..., row, :] = False
    return mask


def tril(n):
    return np.tril(np.ones((n, n), dtype=bool))


def run_attention(fn, inputs):
    grad = bool(inputs.get("grad"))
    q, k, v = (as_tensor(inputs[name], grad) for name in ("query", "key", "value"))
    if inputs.get("mask") is None:
        result = fn(q, k, v)
    else:
        result = fn(q, k, v, mask=as_tensor(inputs["mask"]))
    output, weights = expect_tuple(result, ("output", "weights"))
    outputs = {"output": output, "weights": weights}
    if grad:
        (output * as_tensor(inputs["probe"])).sum().backward()
        outputs.update(grad_query=q.grad, grad_key=k.grad, grad_value=v.grad)
    return outputs


def attention_public(rng):
    return [
        Case("2d-float64", attention_inputs(rng, (), 4, 6, 8, 5), "one sequence, Lq != Lk, d_k != d_v"),
        Case("3d-padding-float32",
             dict(attention_inputs(rng, (2,), 5, 7, 16, 4, "float32"), mask=random_mask(rng, (2, 1, 7))),
             "a batch with a padding mask of shape (B, 1, Lk)"),
        Case("4d-causal-float64",
             dict(attention_inputs(rng, (2, 3), 6, 6, 8, 8), mask=tril(6)),
             "batch and heads, causal (L, L) mask broadcast over both"),
        Case("fully-masked-row-float64",
             dict(attention_inputs(rng, (1,), 4, 5, 8, 3), mask=random_mask(rng, (1, 4, 5), empty_rows=(2,))),
             "query 2 may attend to no key"),
        Case("large-scores-float64", attention_inputs(rng, (2,), 3, 4, 8, 4, scale=40.0),
             "scores of several thousand"),
        Case("gradients-float64",
             dict(attention_inputs(rng, (2,), 4, 5, 6, 3), mask=random_mask(rng, (2, 4, 5), empty_rows=(1,)),
                  grad=True, probe=rng.standard_normal((2, 4, 3))),
             "gradients through a mask with a fully masked row"),
    ]


def run_causal(fn, inputs):
    mask = fn(inputs["size"], device=inputs["device"]) if inputs.get("device") else fn(inputs["size"])
    return {"mask": mask}


def run_padding(fn, inputs):
    return {"mask": fn(as_tensor(inputs["tokens"]), inputs["pad_id"])}


def token_batch(rng, batch, length, pad_id, vocab=20):
    """Token ids (B, L) whose rows end in a random amount of padding (row 0 has none)."""
    tokens = rng.integers(0, vocab, (batch, length))
    tokens[tokens == pad_id] = (pad_id + 1) % vocab
    for b in range(1, batch):
        n_pad = int(rng.integers(1, length))
        tokens[b, length - n_pad:] = pad_id
    return tokens.astype("int64")


def run_flops(fn, inputs):
    return {"flops": fn(inputs["n_queries"], inputs["n_keys"], inputs["d_k"], inputs["d_v"])}


def flops_case(name, n, m, d_k, d_v):
    return Case(name, {"n_queries": n, "n_keys": m, "d_k": d_k, "d_v": d_v})


def run_quiz(answer, inputs):
    return {"answer": answer}


EXERCISES = [
    Exercise("scaled_dot_product_attention", run_attention, attention_public),
    Exercise("causal_mask", run_causal, lambda rng: [
        Case("size-1", {"size": 1}, "a single position"),
        Case("size-4", {"size": 4}),
        Case("size-7-device", {"size": 7, "device": "cpu"}, "with device='cpu' passed"),
    ]),
    Exercise("padding_mask", run_padding, lambda rng: [
        Case("pad-0", {"tokens": token_batch(rng, 3, 6, 0), "pad_id": 0}, "pad_id 0, rows with and without padding"),
        Case("pad-3", {"tokens": token_batch(rng, 2, 5, 3), "pad_id": 3}, "a pad_id other than 0"),
    ]),
    Exercise("attention_flops", run_flops, lambda rng: [
        flops_case("square", 128, 128, 64, 64),
        flops_case("cross-attention", 10, 30, 16, 8),
    ]),
    Exercise("quiz_sqrt_dk", run_quiz, lambda rng: [Case("answer", {})], kind="quiz",
             choices=("A", "B", "C", "D")),
]
