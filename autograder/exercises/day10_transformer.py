"""Days 10-12 exercises: how each item is called, and its public cases.

Module items are graded on identical weights: every case carries the
constructor arguments and one array per `state_dict` key of the structure
docs/contract.md fixes (keys contain a dot; nothing else does), generated here
with the case's rng. The runner builds the student's module, converts it to
the case's dtype, loads the weights with strict=True and runs it in eval mode.

Besides value checks, some cases check a property and return booleans:
decoder causality (changing future target positions never changes earlier
outputs), padding invariance (changing what sits at padded source positions
never changes the other outputs), a permutation check (without a positional
encoding the encoder's output just permutes with its input), and that the
encoder sees the whole source (no causal mask in the encoder).
"""
from __future__ import annotations

import math

import numpy as np

from ..exercise import UNANSWERED, Case, Exercise, StudentError, as_tensor, load_weights

# ---------------------------------------------------------------- weights (numpy only: cases are built outside torch)


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def linear_weights(rng, prefix, n_in, n_out, dtype, scale=1.0):
    """weight (n_out, n_in) and bias (n_out,) of an nn.Linear, roughly variance-preserving."""
    return {
        _join(prefix, "weight"): (rng.standard_normal((n_out, n_in)) * scale / math.sqrt(n_in)).astype(dtype),
        _join(prefix, "bias"): (rng.standard_normal(n_out) * 0.1).astype(dtype),
    }


def norm_weights(rng, prefix, d, dtype):
    """An nn.LayerNorm's weight and bias, away from (1, 0) so that a missing or misplaced norm shows."""
    return {
        _join(prefix, "weight"): (1.0 + 0.3 * rng.standard_normal(d)).astype(dtype),
        _join(prefix, "bias"): (0.3 * rng.standard_normal(d)).astype(dtype),
    }


def mha_weights(rng, prefix, d, dtype):
    """MultiHeadAttention: W_q, W_k, W_v, W_o (queries and keys scaled up so attention is not uniform)."""
    w = {}
    for name, scale in (("W_q", 2.0), ("W_k", 2.0), ("W_v", 1.0), ("W_o", 1.0)):
        w.update(linear_weights(rng, _join(prefix, name), d, d, dtype, scale))
    return w


def ff_weights(rng, prefix, d, d_ff, dtype):
    w = linear_weights(rng, _join(prefix, "linear1"), d, d_ff, dtype, scale=1.4)
    w.update(linear_weights(rng, _join(prefix, "linear2"), d_ff, d, dtype))
    return w


def encoder_layer_weights(rng, prefix, d, d_ff, dtype):
    w = mha_weights(rng, _join(prefix, "self_attn"), d, dtype)
    w.update(ff_weights(rng, _join(prefix, "feed_forward"), d, d_ff, dtype))
    for name in ("norm1", "norm2"):
        w.update(norm_weights(rng, _join(prefix, name), d, dtype))
    return w


def decoder_layer_weights(rng, prefix, d, d_ff, dtype):
    w = mha_weights(rng, _join(prefix, "self_attn"), d, dtype)
    w.update(mha_weights(rng, _join(prefix, "cross_attn"), d, dtype))
    w.update(ff_weights(rng, _join(prefix, "feed_forward"), d, d_ff, dtype))
    for name in ("norm1", "norm2", "norm3"):
        w.update(norm_weights(rng, _join(prefix, name), d, dtype))
    return w


def transformer_weights(rng, src_vocab, tgt_vocab, d, layers, d_ff, dtype):
    """Embeddings of scale 1/sqrt(d), so that after the sqrt(d_model) scaling they match the encoding's scale."""
    w = {
        "src_embed.weight": (rng.standard_normal((src_vocab, d)) / math.sqrt(d)).astype(dtype),
        "tgt_embed.weight": (rng.standard_normal((tgt_vocab, d)) / math.sqrt(d)).astype(dtype),
    }
    for i in range(layers):
        w.update(encoder_layer_weights(rng, f"encoder_layers.{i}", d, d_ff, dtype))
    for i in range(layers):
        w.update(decoder_layer_weights(rng, f"decoder_layers.{i}", d, d_ff, dtype))
    w.update(linear_weights(rng, "generator", d, tgt_vocab, dtype, scale=2.0))
    return w


# ---------------------------------------------------------------- masks and tokens


def tril(n):
    return np.tril(np.ones((n, n), dtype=bool))


def lengths_mask(lengths, size):
    """(B, 1, size) padding mask from the number of real positions in each row."""
    return (np.arange(size)[None, :] < np.asarray(lengths)[:, None])[:, None, :]


def tokens(rng, lengths, size, vocab, pad_id=0):
    """Token ids (B, size): real tokens in [1, vocab) then pad_id."""
    out = rng.integers(1, vocab, (len(lengths), size))
    out[~lengths_mask(lengths, size)[:, 0, :]] = pad_id
    return out.astype("int64")


def tgt_mask_for(lengths, size):
    """(B, T, T) decoder mask: padding of the keys and causal."""
    return lengths_mask(lengths, size) & tril(size)[None]


# ---------------------------------------------------------------- running modules


def dtype_of(inputs):
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[inputs["dtype"]]


def build_module(cls, inputs, init_names):
    """The student's module, in the case's dtype, holding the case's weights, in eval mode."""
    import torch

    init = {name: inputs[name] for name in init_names if inputs.get(name) is not None}
    module = cls(**init)
    if not isinstance(module, torch.nn.Module):
        raise StudentError(f"{cls.__name__}(...) should build a torch.nn.Module, got {type(module).__name__}")
    module = module.to(dtype_of(inputs))
    weights = {k: as_tensor(v) for k, v in inputs.items() if "." in k}
    load_weights(module, weights, "the submodules it names, which the grader relies on")
    return module.eval()


def tensor_result(value, what):
    import torch

    if not isinstance(value, torch.Tensor):
        described = f"a tuple of {len(value)}" if isinstance(value, tuple) else type(value).__name__
        raise StudentError(f"{what} should return one tensor, got {described}")
    return value


def unchanged(a, b, keep=None):
    """Whether two outputs agree (where `keep` is True), up to rounding."""
    import torch

    a = torch.Tensor.numpy(torch.Tensor.detach(a)).astype(np.float64)
    b = torch.Tensor.numpy(torch.Tensor.detach(b)).astype(np.float64)
    if a.shape != b.shape:
        raise StudentError(f"the output's shape changes with its input's values ({list(a.shape)} vs {list(b.shape)})")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        # Otherwise NaN would make "did it change?" come out either way.
        raise StudentError("the output contains NaN or infinite values")
    if keep is not None:
        a, b = a[keep], b[keep]
    if a.size == 0:
        return True
    return bool((abs(a - b) <= 1e-6 * (1.0 + abs(a).max())).all())


def mask_or_none(inputs, name):
    return as_tensor(inputs[name]) if inputs.get(name) is not None else None


# ---------------------------------------------------------------- sinusoidal_positional_encoding


def run_pe(fn, inputs):
    if inputs.get("expect_error"):
        try:
            fn(inputs["max_len"], inputs["d_model"])
        except ValueError:
            return {"raises_value_error": True}
        except NotImplementedError:
            raise
        except Exception as exc:  # noqa: BLE001 - any other failure is the wrong answer to an odd d_model
            raise StudentError(f"for an odd d_model raise a ValueError; got {type(exc).__name__}: {str(exc)[:200]}")
        return {"raises_value_error": False}
    return {"pe": fn(inputs["max_len"], inputs["d_model"])}


def pe_case(name, max_len, d_model, note="", **kw):
    tol = (1e-4, 1e-3) if max_len > 128 else None  # float32 angles of large positions differ by ~1e-4
    return Case(name, {"max_len": max_len, "d_model": d_model}, note, tolerance=tol, **kw)


def pe_public(rng):
    return [
        pe_case("10x16", 10, 16, "10 positions, d_model 16"),
        pe_case("50x6", 50, 6, "a narrow encoding: the slowest pair has a long wavelength"),
        pe_case("200x16", 200, 16, "200 positions (tolerance 1e-3: float32 angles of large positions)"),
        Case("odd-d_model", {"max_len": 5, "d_model": 7, "expect_error": True}, "d_model 7 must raise ValueError"),
    ]


# ---------------------------------------------------------------- layer_norm


def run_layer_norm(fn, inputs):
    x, gamma, beta = (as_tensor(inputs[k]) for k in ("x", "gamma", "beta"))
    if inputs.get("eps") is None:
        return {"y": fn(x, gamma, beta)}
    return {"y": fn(x, gamma, beta, eps=inputs["eps"])}


def ln_inputs(rng, shape, dtype, scale=1.0, offset=0.0, eps=None):
    d = shape[-1]
    return {
        "x": (rng.standard_normal(shape) * scale + offset).astype(dtype),
        "gamma": (1.0 + 0.5 * rng.standard_normal(d)).astype(dtype),
        "beta": (0.5 * rng.standard_normal(d)).astype(dtype),
        "eps": eps,
    }


def ln_public(rng):
    return [
        Case("2d-float64", ln_inputs(rng, (5, 8), "float64"), "(N, D) input, default eps"),
        Case("3d-float32", ln_inputs(rng, (2, 4, 16), "float32"), "(B, L, D) input: normalise over the last axis"),
        Case("small-variance-float64", ln_inputs(rng, (3, 12), "float64", scale=0.01),
             "features of variance 1e-4, where the place of eps matters"),
        Case("large-offset-float32", ln_inputs(rng, (4, 32), "float32", offset=3000.0), "features around 3000",
             tolerance=(1e-3, 1e-3)),
    ]


# ---------------------------------------------------------------- PositionwiseFeedForward


def run_ff(cls, inputs):
    import torch

    module = build_module(cls, inputs, ("d_model", "d_ff", "dropout"))
    with torch.no_grad():
        return {"output": tensor_result(module(as_tensor(inputs["x"])), "forward")}


def ff_inputs(rng, batch, length, d, d_ff, dtype, dropout=0.1):
    return dict({"d_model": d, "d_ff": d_ff, "dropout": dropout, "dtype": dtype,
                 "x": rng.standard_normal((batch, length, d)).astype(dtype)},
                **ff_weights(rng, "", d, d_ff, dtype))


def ff_public(rng):
    return [
        Case("float64", ff_inputs(rng, 2, 5, 16, 32, "float64"), "d_model 16, d_ff 32, dropout 0.1 in eval mode"),
        Case("float32", ff_inputs(rng, 1, 3, 8, 24, "float32"), "d_model 8, d_ff 24"),
    ]


# ---------------------------------------------------------------- EncoderLayer

LAYER_INIT = ("d_model", "num_heads", "d_ff", "dropout")


def run_encoder_layer(cls, inputs):
    import torch

    layer = build_module(cls, inputs, LAYER_INIT)
    x, mask = as_tensor(inputs["x"]), mask_or_none(inputs, "src_mask")
    with torch.no_grad():
        out = tensor_result(layer(x, src_mask=mask), "forward")
        if inputs["check"] == "values":
            return {"output": out}
        if inputs["check"] == "padding":
            changed = tensor_result(layer(as_tensor(inputs["x_changed"]), src_mask=mask), "forward")
            real = inputs["src_mask"][:, 0, :]  # (B, L): outputs at real positions
            return {"real_positions_unchanged": unchanged(out, changed, real)}
    raise ValueError(inputs["check"])


def layer_inputs(rng, batch, length, d, heads, d_ff, dtype, lengths=None, check="values", dropout=0.1):
    """Inputs of an EncoderLayer case; `lengths` = real positions per row (None: no mask)."""
    inputs = {"d_model": d, "num_heads": heads, "d_ff": d_ff, "dropout": dropout, "dtype": dtype, "check": check,
              "x": rng.standard_normal((batch, length, d)).astype(dtype),
              "src_mask": None if lengths is None else lengths_mask(lengths, length)}
    if check == "padding":
        changed = inputs["x"].copy()
        pad = ~inputs["src_mask"][:, 0, :]
        changed[pad] = rng.standard_normal((int(pad.sum()), d)) * 3.0
        inputs["x_changed"] = changed
    inputs.update(encoder_layer_weights(rng, "", d, d_ff, dtype))
    return inputs


def encoder_public(rng):
    return [
        Case("padded-float64", layer_inputs(rng, 2, 6, 16, 2, 32, "float64", lengths=[6, 4]),
             "2 heads, the second sentence padded (src_mask (B, 1, L))"),
        Case("no-mask-float32", layer_inputs(rng, 2, 5, 16, 4, 24, "float32"), "4 heads, src_mask=None"),
        Case("padding-invariance", layer_inputs(rng, 3, 7, 16, 2, 32, "float64", lengths=[7, 3, 5], check="padding"),
             "property: what sits at padded positions never changes the outputs at real positions"),
    ]


# ---------------------------------------------------------------- DecoderLayer


def run_decoder_layer(cls, inputs):
    import torch

    layer = build_module(cls, inputs, LAYER_INIT)
    x, memory = as_tensor(inputs["x"]), as_tensor(inputs["memory"])
    src_mask, tgt_mask = mask_or_none(inputs, "src_mask"), mask_or_none(inputs, "tgt_mask")

    def run(x, memory):
        return tensor_result(layer(x, memory, src_mask=src_mask, tgt_mask=tgt_mask), "forward")

    with torch.no_grad():
        out = run(x, memory)
        check = inputs["check"]
        if check == "values":
            return {"output": out}
        if check == "causal":
            k = inputs["split"]
            changed = run(as_tensor(inputs["x_changed"]), memory)
            return {"earlier_positions_unchanged": unchanged(out[:, :k], changed[:, :k])}
        if check == "padding":
            changed = run(x, as_tensor(inputs["memory_changed"]))
            return {"outputs_unchanged": unchanged(out, changed)}
    raise ValueError(check)


def decoder_inputs(rng, batch, tgt_len, src_len, d, heads, d_ff, dtype, src_lengths=None, tgt_lengths=None,
                   check="values", split=None, dropout=0.1):
    """Inputs of a DecoderLayer case: x (B, T, D), memory (B, S, D) and their masks."""
    tgt_lengths = tgt_lengths or [tgt_len] * batch
    inputs = {"d_model": d, "num_heads": heads, "d_ff": d_ff, "dropout": dropout, "dtype": dtype, "check": check,
              "x": rng.standard_normal((batch, tgt_len, d)).astype(dtype),
              "memory": rng.standard_normal((batch, src_len, d)).astype(dtype),
              "src_mask": None if src_lengths is None else lengths_mask(src_lengths, src_len),
              "tgt_mask": tgt_mask_for(tgt_lengths, tgt_len)}
    if check == "causal":
        changed = inputs["x"].copy()
        changed[:, split:] = rng.standard_normal((batch, tgt_len - split, d)) * 3.0
        inputs.update(x_changed=changed, split=split)
    if check == "padding":
        changed = inputs["memory"].copy()
        pad = ~inputs["src_mask"][:, 0, :]
        changed[pad] = rng.standard_normal((int(pad.sum()), d)) * 3.0
        inputs["memory_changed"] = changed
    inputs.update(decoder_layer_weights(rng, "", d, d_ff, dtype))
    return inputs


def decoder_public(rng):
    return [
        Case("cross-lengths-float64",
             decoder_inputs(rng, 2, 5, 7, 16, 2, 32, "float64", src_lengths=[7, 4], tgt_lengths=[5, 3]),
             "target length 5, source length 7, padding in both"),
        Case("same-lengths-float64",
             decoder_inputs(rng, 2, 6, 6, 16, 4, 32, "float64", src_lengths=[6, 2], tgt_lengths=[6, 4]),
             "target and source of the same length 6"),
        Case("same-lengths-float32",
             decoder_inputs(rng, 3, 4, 4, 16, 2, 24, "float32", src_lengths=[4, 3, 1]),
             "target and source of length 4, float32"),
        Case("causality", decoder_inputs(rng, 2, 6, 5, 16, 2, 32, "float64", src_lengths=[5, 5], check="causal",
                                         split=3),
             "property: changing target positions 3.. never changes the outputs at positions 0..2"),
        Case("padding-invariance",
             decoder_inputs(rng, 2, 4, 6, 16, 2, 32, "float64", src_lengths=[6, 3], check="padding"),
             "property: what the encoder puts at padded source positions never changes the outputs"),
    ]


# ---------------------------------------------------------------- Transformer

TRANSFORMER_INIT = ("src_vocab_size", "tgt_vocab_size", "d_model", "num_heads", "num_layers", "d_ff", "dropout",
                    "max_len")


def run_transformer(cls, inputs):
    import torch

    model = build_module(cls, inputs, TRANSFORMER_INIT)
    src, tgt = as_tensor(inputs["src"]), as_tensor(inputs["tgt"])
    src_mask, tgt_mask = as_tensor(inputs["src_mask"]), as_tensor(inputs["tgt_mask"])
    check = inputs["check"]
    with torch.no_grad():
        if check == "values":
            memory = tensor_result(model.encode(src, src_mask), "encode")
            hidden = tensor_result(model.decode(tgt, as_tensor(inputs["memory"]), src_mask, tgt_mask), "decode")
            logits = tensor_result(model(src, tgt, src_mask, tgt_mask), "forward")
            return {"memory": memory, "hidden": hidden, "logits": logits}
        if check == "causal":
            k = inputs["split"]
            before = tensor_result(model(src, tgt, src_mask, tgt_mask), "forward")
            after = tensor_result(model(src, as_tensor(inputs["tgt_changed"]), src_mask, tgt_mask), "forward")
            return {"earlier_logits_unchanged": unchanged(before[:, :k], after[:, :k])}
        if check == "padding":
            before = tensor_result(model(src, tgt, src_mask, tgt_mask), "forward")
            after = tensor_result(model(as_tensor(inputs["src_changed"]), tgt, src_mask, tgt_mask), "forward")
            return {"logits_unchanged": unchanged(before, after)}
        if check == "permutation":
            perm = torch.from_numpy(inputs["perm"])
            memory = tensor_result(model.encode(src, src_mask), "encode")
            permuted = tensor_result(model.encode(src[:, perm], src_mask), "encode")
            return {"memory_just_permutes": unchanged(memory[:, perm], permuted)}
        if check == "whole_source":
            memory = tensor_result(model.encode(src, src_mask), "encode")
            changed = tensor_result(model.encode(as_tensor(inputs["src_changed"]), src_mask), "encode")
            return {"first_position_sees_last_token": not unchanged(memory[:, :1], changed[:, :1])}
    raise ValueError(check)


def transformer_inputs(rng, batch, src_len, tgt_len, d, heads, layers, d_ff, dtype, src_vocab=13, tgt_vocab=11,
                       src_lengths=None, tgt_lengths=None, check="values", split=None, max_len=64, dropout=0.1):
    """Inputs of a Transformer case: token batches with padding, masks, a memory for decode, and weights."""
    src_lengths = src_lengths or [src_len] * batch
    tgt_lengths = tgt_lengths or [tgt_len] * batch
    inputs = {"src_vocab_size": src_vocab, "tgt_vocab_size": tgt_vocab, "d_model": d, "num_heads": heads,
              "num_layers": layers, "d_ff": d_ff, "dropout": dropout, "max_len": max_len, "dtype": dtype,
              "check": check,
              "src": tokens(rng, src_lengths, src_len, src_vocab), "tgt": tokens(rng, tgt_lengths, tgt_len, tgt_vocab),
              "src_mask": lengths_mask(src_lengths, src_len), "tgt_mask": tgt_mask_for(tgt_lengths, tgt_len)}
    if check == "values":
        inputs["memory"] = rng.standard_normal((batch, src_len, d)).astype(dtype)
    if check == "causal":
        changed = inputs["tgt"].copy()
        changed[:, split:] = (changed[:, split:] + rng.integers(1, tgt_vocab - 1, (batch, tgt_len - split))) % tgt_vocab
        changed[:, split:][changed[:, split:] == 0] = 1
        inputs.update(tgt_changed=changed.astype("int64"), split=split)
    if check == "padding":
        changed = inputs["src"].copy()
        pad = ~inputs["src_mask"][:, 0, :]
        changed[pad] = rng.integers(1, src_vocab, int(pad.sum()))
        inputs["src_changed"] = changed
    if check == "permutation":
        perm = rng.permutation(src_len)
        while (perm == np.arange(src_len)).any():  # no token stays in place
            perm = rng.permutation(src_len)
        inputs["perm"] = perm.astype("int64")
    if check == "whole_source":
        changed = inputs["src"].copy()
        changed[:, -1] = changed[:, -1] % (src_vocab - 1) + 1  # a different real token
        inputs["src_changed"] = changed
    inputs.update(transformer_weights(rng, src_vocab, tgt_vocab, d, layers, d_ff, dtype))
    return inputs


def transformer_public(rng):
    return [
        Case("one-layer-float64",
             transformer_inputs(rng, 2, 7, 5, 16, 2, 1, 32, "float64", src_lengths=[7, 4], tgt_lengths=[5, 3]),
             "1 layer, source length 7, target length 5, padding in both; checks encode, decode and forward"),
        Case("two-layers-float32",
             transformer_inputs(rng, 2, 6, 6, 32, 4, 2, 48, "float32", src_vocab=17, tgt_vocab=9,
                                src_lengths=[6, 5], tgt_lengths=[6, 2]),
             "2 layers, source and target of length 6, float32"),
        Case("causality", transformer_inputs(rng, 2, 6, 7, 16, 2, 2, 32, "float64", check="causal", split=4),
             "property: changing target tokens 4.. never changes the logits at positions 0..3"),
        Case("padding-invariance",
             transformer_inputs(rng, 2, 8, 5, 16, 2, 1, 32, "float64", src_lengths=[8, 3], check="padding"),
             "property: changing the source tokens at padded positions never changes the logits"),
        Case("permutation", transformer_inputs(rng, 2, 6, 4, 16, 2, 1, 32, "float64", check="permutation"),
             "property: shuffling the source must not just shuffle the encoder's output (positions are encoded)"),
        Case("whole-source", transformer_inputs(rng, 2, 6, 4, 16, 2, 1, 32, "float64", check="whole_source"),
             "property: the encoder's first position sees the last source token (no causal mask in the encoder)"),
    ]


# ---------------------------------------------------------------- transformer_parameter_count

COUNT_ARGS = ("src_vocab_size", "tgt_vocab_size", "d_model", "num_heads", "num_layers", "d_ff")


def run_count(fn, inputs):
    return {"count": fn(*(inputs[k] for k in COUNT_ARGS))}


def count_case(name, *args, note=""):
    return Case(name, dict(zip(COUNT_ARGS, args)), note)


# ---------------------------------------------------------------- quiz_architecture_for_task

ARCHITECTURES = ("encoder-only", "decoder-only", "encoder-decoder")
TASKS = ("translation", "sentiment", "pos_tagging", "story_continuation", "code_completion")


def _chosen(value, choices: tuple[str, ...], entry: str, where: str):
    """One entry of a dict answer whose values are names from `choices` (compared in lower case): the value, or a
    StudentError saying it has no answer yet (None, the placeholder) or is not one of them."""
    allowed = ", ".join(repr(c) for c in choices)
    if value is None:
        raise StudentError(f"{UNANSWERED} for {entry}: give one of {allowed}")
    if type(value) is not str or value.strip().lower() not in choices:
        raise StudentError(f"{where} should be one of {allowed}, got {value!r}")
    return value


def run_architecture_quiz(answer, inputs):
    """One case per task, so that each task earns its share of the point."""
    task = inputs["task"]
    if type(answer) is not dict:
        raise StudentError(f"quiz_architecture_for_task should be a dict, got {type(answer).__name__}")
    if task not in answer:
        unknown = [str(k) for k in answer if k not in TASKS]
        raise StudentError(f"the dict has no key {task!r}" + (f" (unknown keys: {', '.join(unknown)})" if unknown else ""))
    return {"answer": _chosen(answer[task], ARCHITECTURES, f"{task!r}", f"quiz_architecture_for_task[{task!r}]")}


# ---------------------------------------------------------------- diagram_labels

DIAGRAM_COMPONENTS = ("embedding", "positional encoding", "self-attention", "masked self-attention", "cross-attention",
                      "feed-forward", "add & norm", "linear", "softmax")
DIAGRAM_BOXES = tuple(range(1, 11))


def run_diagram_labels(answer, inputs):
    """One case per numbered box of the diagram, so that each box earns its share of the points."""
    box = inputs["box"]
    if type(answer) is not dict:
        raise StudentError(f"diagram_labels should be a dict, box number -> component, got {type(answer).__name__}")
    if box in answer:
        value = answer[box]
    elif str(box) in answer:
        value = answer[str(box)]
    else:
        raise StudentError(f"the dict has no key {box} (the keys are the box numbers 1 to {len(DIAGRAM_BOXES)})")
    return {"answer": _chosen(value, DIAGRAM_COMPONENTS, f"box {box}", f"diagram_labels[{box}]")}


ALL_ATTENTION = ("scaled_dot_product_attention", "split_heads", "merge_heads", "MultiHeadAttention")

EXERCISES = [
    Exercise("sinusoidal_positional_encoding", run_pe, pe_public),
    Exercise("layer_norm", run_layer_norm, ln_public),
    Exercise("PositionwiseFeedForward", run_ff, ff_public, kind="class"),
    Exercise("EncoderLayer", run_encoder_layer, encoder_public, kind="class",
             needs=ALL_ATTENTION + ("PositionwiseFeedForward",)),
    Exercise("DecoderLayer", run_decoder_layer, decoder_public, kind="class",
             needs=ALL_ATTENTION + ("PositionwiseFeedForward",)),
    Exercise("Transformer", run_transformer, transformer_public, kind="class",
             needs=ALL_ATTENTION + ("sinusoidal_positional_encoding", "PositionwiseFeedForward", "EncoderLayer",
                                    "DecoderLayer")),
    Exercise("transformer_parameter_count", run_count, lambda rng: [
        count_case("base-model", 37000, 37000, 512, 8, 6, 2048, note="the paper's base model, separate embeddings"),
        count_case("small", 11, 13, 16, 2, 2, 32, note="a small model with different vocabularies"),
    ], needs=ALL_ATTENTION + ("sinusoidal_positional_encoding", "PositionwiseFeedForward", "EncoderLayer",
                              "DecoderLayer", "Transformer")),
    # One case per task, with the choices in upper case (the comparison upper-cases the answer).
    Exercise("quiz_architecture_for_task", run_architecture_quiz,
             lambda rng: [Case(task, {"task": task}) for task in TASKS], kind="quiz",
             choices=tuple(a.upper() for a in ARCHITECTURES)),
    # One case per box; like a quiz, the answers are never public (the check confirms their form only).
    Exercise("diagram_labels", run_diagram_labels,
             lambda rng: [Case(f"box-{box}", {"box": box}) for box in DIAGRAM_BOXES], kind="quiz",
             choices=tuple(c.upper() for c in DIAGRAM_COMPONENTS)),
]
