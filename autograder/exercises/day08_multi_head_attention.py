"""Days 8-9 exercises: how each item is called, and its public cases."""
from __future__ import annotations

import numpy as np

from ..exercise import Case, Exercise, StudentError, as_tensor, expect_tuple, load_weights

PROJECTIONS = ("W_q", "W_k", "W_v", "W_o")


# split_heads / merge_heads

def run_split(fn, inputs):
    return {"heads": fn(as_tensor(inputs["x"]), inputs["num_heads"])}


def run_merge(fn, inputs):
    return {"merged": fn(as_tensor(inputs["x"]))}


def split_case(rng, name, batch, length, d_model, num_heads, dtype="float64", note=""):
    x = rng.standard_normal((batch, length, d_model)).astype(dtype)
    return Case(name, {"x": x, "num_heads": num_heads}, note)


def merge_case(rng, name, batch, num_heads, length, d_k, dtype="float64", note=""):
    x = rng.standard_normal((batch, num_heads, length, d_k)).astype(dtype)
    return Case(name, {"x": x}, note)


def split_public(rng):
    return [
        split_case(rng, "B2-L3-D8-h2-float64", 2, 3, 8, 2, note="two heads of width 4"),
        split_case(rng, "B3-L5-D12-h4-float32", 3, 5, 12, 4, "float32", "four heads of width 3, float32"),
        split_case(rng, "one-head-float64", 2, 4, 6, 1, note="num_heads = 1: one head holding every feature"),
        split_case(rng, "width-1-heads-float64", 1, 3, 5, 5, note="num_heads = d_model: heads of width 1"),
    ]


def merge_public(rng):
    return [
        merge_case(rng, "B2-h2-L3-dk4-float64", 2, 2, 3, 4, note="two heads of width 4"),
        merge_case(rng, "B3-h4-L5-dk3-float32", 3, 4, 5, 3, "float32", "four heads of width 3, float32"),
        merge_case(rng, "one-head-float64", 2, 1, 4, 6, note="a single head"),
    ]


# MultiHeadAttention

def mha_state(rng, d_model, bias=True, dtype="float64"):
    """Random weights for every projection, named like the module's state_dict."""
    state = {}
    for name in PROJECTIONS:
        state[f"{name}.weight"] = (rng.standard_normal((d_model, d_model)) / np.sqrt(d_model)).astype(dtype)
        if bias:
            state[f"{name}.bias"] = (0.1 * rng.standard_normal(d_model)).astype(dtype)
    return state


def random_mask(rng, shape, keep=0.7, empty_rows=()):
    """A boolean mask with at least one True per row, except the rows listed in `empty_rows`."""
    mask = rng.random(shape) < keep
    mask[..., 0] |= ~mask.any(axis=-1)
    for row in empty_rows:
        mask[..., row, :] = False
    return mask


def tril(n):
    return np.tril(np.ones((n, n), dtype=bool))


def mha_inputs(rng, batch, lq, lk, d_model, num_heads, dtype="float64", mask=None, bias=True,
               self_attention=False, **extra):
    """Constructor arguments, weights and inputs of one MultiHeadAttention case.

    With `self_attention`, the runner passes the same tensor as query, key and value.
    """
    inputs = {"d_model": d_model, "num_heads": num_heads, "bias": bias, "self": self_attention}
    inputs.update(mha_state(rng, d_model, bias, dtype))
    inputs["query"] = rng.standard_normal((batch, lq, d_model)).astype(dtype)
    if not self_attention:
        inputs["key"] = rng.standard_normal((batch, lk, d_model)).astype(dtype)
        inputs["value"] = rng.standard_normal((batch, lk, d_model)).astype(dtype)
    inputs["mask"] = mask
    inputs.update(extra)
    return inputs


def build_module(cls, inputs, dtype=None):
    """The student's module, built from the case's arguments, with the case's weights loaded."""
    import torch

    init = {"d_model": inputs["d_model"], "num_heads": inputs["num_heads"], "dropout": inputs.get("dropout", 0.0)}
    if "bias" in inputs:
        init["bias"] = inputs["bias"]
    module = cls(**init)
    if not isinstance(module, torch.nn.Module):
        raise StudentError("MultiHeadAttention should be a torch.nn.Module (keep the given __init__)")
    module = module.to(dtype)
    state = {k: as_tensor(v) for k, v in inputs.items() if k.startswith("W_")}
    return load_weights(module, state, "W_q, W_k, W_v, W_o = nn.Linear(d_model, d_model, bias=bias)")


def run_mha(cls, inputs):
    import torch

    outputs = {}
    if "init_check" in inputs:
        # The given __init__ must refuse widths the heads do not divide (and accept the others).
        d_model, num_heads = inputs["init_check"]
        try:
            cls(d_model=d_model, num_heads=num_heads)
            outputs["init_check_raised_value_error"] = False
        except ValueError:
            outputs["init_check_raised_value_error"] = True
    grad = bool(inputs.get("grad"))
    query = as_tensor(inputs["query"], grad)
    if inputs.get("self"):
        key = value = query
    else:
        key, value = as_tensor(inputs["key"], grad), as_tensor(inputs["value"], grad)
    module = build_module(cls, inputs, query.dtype)
    module.train(bool(inputs.get("train")))
    if "seed" in inputs:
        torch.manual_seed(inputs["seed"])  # dropout draws in the same order as the reference's
    if inputs.get("mask") is None:
        result = module(query, key, value)
    else:
        result = module(query, key, value, mask=as_tensor(inputs["mask"]))
    output, weights = expect_tuple(result, ("output", "weights"))
    # In training mode dropout is active, its draws fixed by the seed: the output shows whether it was applied.
    outputs.update(output=output, weights=weights)
    if grad:
        (output * as_tensor(inputs["probe"])).sum().backward()
        outputs["grad_query"] = query.grad
        outputs["grad_W_q"] = module.W_q.weight.grad
        if not inputs.get("self"):
            outputs["grad_value"] = value.grad
    return outputs


def mha_public(rng):
    return [
        Case("self-attention-float64",
             mha_inputs(rng, 2, 5, 5, 16, 4, self_attention=True, init_check=[10, 4]),
             "self-attention mha(x, x, x), 4 heads, no mask; and MultiHeadAttention(10, 4) raises ValueError"),
        Case("cross-attention-float32",
             mha_inputs(rng, 2, 3, 6, 12, 3, "float32"),
             "cross-attention: Lq = 3 queries, Lk = 6 keys, key != value, float32"),
        Case("mask-3d-float64",
             mha_inputs(rng, 3, 4, 4, 8, 2, self_attention=True, mask=random_mask(rng, (3, 4, 4))),
             "a (B, Lq, Lk) mask, the same for every head"),
        Case("padding-mask-float64",
             mha_inputs(rng, 2, 5, 5, 8, 2, self_attention=True, mask=random_mask(rng, (2, 1, 5), 0.6)),
             "a (B, 1, Lk) padding mask (as many sentences as heads)"),
        Case("mask-4d-float64",
             mha_inputs(rng, 2, 4, 4, 8, 4, self_attention=True, mask=random_mask(rng, (2, 1, 4, 4))),
             "a (B, 1, Lq, Lk) mask that already has its head axis"),
        Case("causal-no-bias-float32",
             mha_inputs(rng, 1, 6, 6, 8, 2, "float32", self_attention=True, mask=tril(6), bias=False),
             "bias=False, causal (L, L) mask, float32"),
        Case("weights-before-dropout-float64",
             mha_inputs(rng, 2, 4, 4, 8, 2, self_attention=True, dropout=0.5, train=True, seed=11),
             "dropout=0.5 in training mode (seeded): the output uses the dropped-out weights, the returned "
             "weights are the ones before dropout"),
        Case("gradients-float64",
             mha_inputs(rng, 2, 3, 4, 8, 2, mask=random_mask(rng, (2, 1, 4)), grad=True,
                        probe=rng.standard_normal((2, 3, 8))),
             "gradients with respect to the query, the value and W_q"),
    ]


# mha_parameter_count

def run_count(fn, inputs):
    if "bias" in inputs:
        return {"count": fn(inputs["d_model"], inputs["num_heads"], bias=inputs["bias"])}
    return {"count": fn(inputs["d_model"], inputs["num_heads"])}


def count_case(name, d_model, num_heads, bias=None, note=""):
    inputs = {"d_model": d_model, "num_heads": num_heads}
    if bias is not None:
        inputs["bias"] = bias
    return Case(name, inputs, note)


EXERCISES = [
    Exercise("split_heads", run_split, split_public),
    Exercise("merge_heads", run_merge, merge_public),
    Exercise("MultiHeadAttention", run_mha, mha_public, kind="class",
             needs=("scaled_dot_product_attention", "split_heads", "merge_heads")),
    Exercise("mha_parameter_count", run_count, lambda rng: [
        count_case("paper-512-8-heads", 512, 8, note="the paper's d_model = 512, h = 8, bias left at its default"),
        count_case("no-bias-512-8-heads", 512, 8, bias=False, note="bias=False"),
        count_case("one-head-64", 64, 1, bias=True, note="a single head"),
        count_case("sixteen-heads-64", 64, 16, bias=True, note="16 heads of width 4"),
    ]),
]
