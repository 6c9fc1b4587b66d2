"""Days 13-14 exercises: how each item is called, its public cases, and the probe model.

`train_step` and `greedy_decode` are not graded with the student's Transformer
but with `ProbeSeq2Seq`, a tiny encoder-decoder with known weights that
records the tokens and masks it is called with; the runners return those
recordings next to the loss, the tokens and the parameters.
"""
from __future__ import annotations

import math

import numpy as np

from ..exercise import Case, Exercise, StudentError, as_tensor, expect_tuple


def as_float(value, what: str) -> float:
    """A student's scalar as a Python float, or a StudentError saying what came back."""
    import torch

    if type(value) is bool:
        raise StudentError(f"{what} should be a float, got a bool")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if type(value) is torch.Tensor and value.numel() == 1:
        return float(value.item())
    raise StudentError(f"{what} should be a float, got {type(value).__name__}")


# --- learning-rate schedules ------------------------------------------------------------------

def run_noam(fn, inputs):
    extra = () if inputs.get("factor") is None else (inputs["factor"],)
    lrs = [as_float(fn(int(s), inputs["d_model"], inputs["warmup_steps"], *extra), "noam_lr(...)")
           for s in inputs["steps"]]
    return {"lr": np.array(lrs, dtype=np.float64)}


SCHEDULE_TOLERANCE = (1e-7, 1e-15)
"""Relative only: learning rates of 1e-7 are normal, so the default atol would hide real errors."""


def noam_case(name, steps, d_model, warmup_steps, factor=None, note=""):
    return Case(name, {"steps": np.asarray(steps, dtype=np.int64), "d_model": d_model,
                       "warmup_steps": warmup_steps, "factor": factor}, note, SCHEDULE_TOLERANCE)


def noam_public(rng):
    return [
        noam_case("paper-settings", [1, 2, 10, 100, 1000, 3999, 4000, 4001, 8000, 20000, 100000], 512, 4000,
                  note="d_model=512, warmup_steps=4000, default factor; warm-up, the peak and the decay"),
        noam_case("step-0", [0], 512, 4000, note="step 0 counts as step 1"),
        noam_case("factor-2", np.arange(1, 41), 64, 10, 2.0, "factor=2.0, steps 1..40 around warmup_steps=10"),
    ]


def run_cosine(fn, inputs):
    args = (inputs["max_lr"], inputs["min_lr"], inputs["warmup_steps"], inputs["total_steps"])
    if inputs.get("invalid"):
        try:
            for s in inputs["steps"]:
                fn(int(s), *args)
        except ValueError:
            return {"raises_value_error": True}
        return {"raises_value_error": False}
    lrs = [as_float(fn(int(s), *args), "warmup_cosine_lr(...)") for s in inputs["steps"]]
    return {"lr": np.array(lrs, dtype=np.float64)}


def cosine_case(name, steps, max_lr, min_lr, warmup_steps, total_steps, note="", invalid=False):
    return Case(name, {"steps": np.asarray(steps, dtype=np.int64), "max_lr": max_lr, "min_lr": min_lr,
                       "warmup_steps": warmup_steps, "total_steps": total_steps, "invalid": invalid}, note,
                SCHEDULE_TOLERANCE)


def cosine_public(rng):
    return [
        cosine_case("warmup-then-cosine", [0, 1, 50, 99, 100, 101, 325, 550, 775, 999, 1000, 1001, 5000],
                    1e-3, 1e-5, 100, 1000, "warmup_steps=100, total_steps=1000, steps 0..5000"),
        cosine_case("no-warmup", np.arange(0, 61), 0.5, 0.1, 0, 50, "warmup_steps=0: cosine from step 0"),
        cosine_case("total-equals-warmup", [0, 5, 10], 1e-3, 0.0, 10, 10,
                    "total_steps == warmup_steps must raise ValueError", invalid=True),
    ]


# --- label smoothing --------------------------------------------------------------------------

def run_smoothing(fn, inputs):
    import torch

    logits = as_tensor(inputs["logits"], requires_grad=True)
    target = as_tensor(inputs["target"])
    if inputs.get("pad_id", "omit") == "omit":
        loss = fn(logits, target, inputs["smoothing"])
    else:
        loss = fn(logits, target, inputs["smoothing"], inputs["pad_id"])
    if type(loss) is not torch.Tensor:
        raise StudentError(f"should return a scalar tensor (so that .backward() works), got {type(loss).__name__}")
    if loss.dim() != 0:
        raise StudentError(f"should return a scalar (0-dimensional) tensor, got shape {list(loss.shape)}")
    if loss.requires_grad:
        loss.backward()
        grad = logits.grad if logits.grad is not None else torch.zeros_like(logits)
    elif float(loss) == 0.0:
        grad = torch.zeros_like(logits)  # a constant 0 (every target is padding) has no gradient
    else:
        raise StudentError("the loss is not connected to the logits (.item() or torch.tensor(...) somewhere?); "
                           "compute it with torch operations so that .backward() works")
    return {"loss": loss.detach(), "grad_logits": grad}


def smoothing_inputs(rng, shape, vocab, smoothing, pad_id="omit", dtype="float64", scale=1.0, pad_fraction=0.3,
                     all_pad=False):
    target = rng.integers(0, vocab, shape)
    if pad_id not in ("omit", None):
        target[target == pad_id] = (pad_id + 1) % vocab
        target[rng.random(shape) < pad_fraction] = pad_id
        if all_pad:
            target[...] = pad_id
    return {"logits": (rng.standard_normal((*shape, vocab)) * scale).astype(dtype),
            "target": target.astype(np.int64), "smoothing": smoothing, "pad_id": pad_id}


def smoothing_public(rng):
    return [
        Case("2d-no-pad-float64", smoothing_inputs(rng, (6,), 5, 0.1), "logits (N, V), pad_id left out"),
        Case("3d-padding-float32", smoothing_inputs(rng, (2, 5), 7, 0.1, pad_id=0, dtype="float32"),
             "logits (B, T, V) with padding targets (pad_id=0)"),
        Case("no-smoothing-float64", smoothing_inputs(rng, (3, 4), 6, 0.0, pad_id=3),
             "smoothing=0.0 is plain cross-entropy; pad_id=3"),
        Case("strong-smoothing-float64", smoothing_inputs(rng, (4, 3), 4, 0.4, pad_id=None),
             "smoothing=0.4, pad_id=None"),
        Case("all-padding-float64", smoothing_inputs(rng, (2, 3), 5, 0.1, pad_id=0, all_pad=True),
             "every target is padding: the loss is 0.0"),
        Case("large-logits-float64", smoothing_inputs(rng, (3, 4), 6, 0.2, pad_id=1, scale=1000.0),
             "logits of about +-1000"),
    ]


# --- the optimizer ----------------------------------------------------------------------------

def run_make_optimizer(fn, inputs):
    """Steps a small model with the student's optimizer and scheduler.

    The rates are compared with the notebook's own `noam_lr` (found next to
    `make_optimizer`), as ratios: a bug in `noam_lr` costs points there, not
    here again.
    """
    import torch

    model = torch.nn.Linear(inputs["weight"].shape[1], inputs["weight"].shape[0], dtype=as_tensor(inputs["x"]).dtype)
    model.load_state_dict({"weight": as_tensor(inputs["weight"]), "bias": as_tensor(inputs["bias"])})
    extra = () if inputs.get("factor") is None else (inputs["factor"],)
    optimizer, scheduler = expect_tuple(fn(model, inputs["d_model"], inputs["warmup_steps"], *extra),
                                        ("optimizer", "scheduler"))
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise StudentError(f"the first element should be a torch.optim optimizer, got {type(optimizer).__name__}")
    if not callable(getattr(scheduler, "step", None)):
        raise StudentError(f"the second element should be a learning-rate scheduler, got {type(scheduler).__name__}")
    group = optimizer.param_groups[0]
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    x, y = as_tensor(inputs["x"]), as_tensor(inputs["y"])
    used = []
    for _ in range(inputs["n_steps"]):
        used.append(float(group["lr"]))  # the rate the coming optimizer step uses
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.step()
        scheduler.step()
    schedule = getattr(fn, "__globals__", {}).get("noam_lr")
    if not callable(schedule):
        raise StudentError("make_optimizer is checked against noam_lr, which is not defined")
    try:
        wanted = [as_float(schedule(k, inputs["d_model"], inputs["warmup_steps"], *extra), "noam_lr(...)")
                  for k in range(1, inputs["n_steps"] + 1)]
    except Exception as exc:  # noqa: BLE001 - the student's noam_lr may raise anything
        raise StudentError(f"make_optimizer is checked against your noam_lr, which raised {type(exc).__name__}: "
                           f"{exc}; fix noam_lr first") from None
    betas = group.get("betas")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.array(used, dtype=np.float64) / np.array(wanted, dtype=np.float64)
    return {
        "betas": None if betas is None else [float(b) for b in betas],
        "eps": None if group.get("eps") is None else float(group["eps"]),
        "weight_decay": float(group.get("weight_decay", 0.0)),
        "holds_every_parameter": held == {id(p) for p in model.parameters()},
        "rate_of_step_k_over_noam_lr_k": ratio,
    }


def optimizer_inputs(rng, d_model, warmup_steps, n_steps, factor=None, dtype="float64"):
    return {"d_model": d_model, "warmup_steps": warmup_steps, "factor": factor, "n_steps": n_steps,
            "weight": rng.standard_normal((3, 4)).astype(dtype), "bias": rng.standard_normal(3).astype(dtype),
            "x": rng.standard_normal((5, 4)).astype(dtype), "y": rng.standard_normal((5, 3)).astype(dtype)}


def optimizer_public(rng):
    return [
        Case("small-model", optimizer_inputs(rng, 16, 4, 8), "d_model=16, warmup_steps=4, default factor, 8 steps"),
        Case("factor-2", optimizer_inputs(rng, 32, 3, 6, factor=2.0), "factor=2.0, 6 steps"),
    ]


# --- the probe model for train_step and greedy_decode -----------------------------------------

PROBE_KEYS = ("src_embed.weight", "tgt_embed.weight", "pos", "mix.weight", "mix.bias", "generator.weight",
              "generator.bias")

_PROBE = None


def probe_class():
    """ProbeSeq2Seq, built on first use (so that importing this module does not import torch)."""
    global _PROBE
    if _PROBE is not None:
        return _PROBE
    import torch
    import torch.nn.functional as F
    from torch import nn

    def check_mask(mask, shape, what):
        if mask is None:
            return None
        if type(mask) is not torch.Tensor:
            raise StudentError(f"{what} should be a boolean tensor or None, got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise StudentError(f"{what} should be a boolean tensor (True = may attend), got dtype {mask.dtype}")
        try:
            return torch.broadcast_to(mask, shape).clone()  # the mask as every query sees it
        except RuntimeError:
            raise StudentError(f"{what} has shape {list(mask.shape)}, which does not broadcast to "
                               f"(batch, queries, keys) = {list(shape)}") from None

    def mix(q, kv, mask, sharpness=1.0):
        """Single-head attention without projections (PyTorch's own; fully masked rows give 0)."""
        scale = sharpness / math.sqrt(q.size(-1))
        return F.scaled_dot_product_attention(q, kv, kv, attn_mask=mask, scale=scale)  # (B, Tq, d)

    class ProbeSeq2Seq(nn.Module):
        """A tiny encoder-decoder with known weights that records how it is called.

        It has the interface of the course's Transformer (`encode`, `decode`,
        `generator`, `forward`); the decoder mixes its inputs twice with the
        target mask, broadly and strongly, so a missing causal mask changes
        even the last position's prediction.
        """

        def __init__(self, vocab_size, d_model, max_len):
            super().__init__()
            self.src_embed = nn.Embedding(vocab_size, d_model)
            self.tgt_embed = nn.Embedding(vocab_size, d_model)
            self.pos = nn.Parameter(torch.zeros(max_len, d_model))
            self.mix = nn.Linear(d_model, d_model)
            self.generator = nn.Linear(d_model, vocab_size)
            self.encoded, self.decoded = [], []

        def encode(self, src, src_mask):
            if type(src) is not torch.Tensor:
                raise StudentError(f"model.encode got src of type {type(src).__name__}; expected a LongTensor")
            B, S = src.shape
            mask = check_mask(src_mask, (B, S, S), "the src_mask passed to the model")
            self.encoded.append({"src": src.detach().clone(), "src_mask": mask})
            x = self.src_embed(src) + self.pos[:S]  # (B, S, D)
            return x + mix(x, x, mask)

        def decode(self, tgt, memory, src_mask, tgt_mask):
            if type(tgt) is not torch.Tensor:
                raise StudentError(f"model.decode got tgt of type {type(tgt).__name__}; expected a LongTensor")
            B, T = tgt.shape
            S = memory.size(1)
            cross = check_mask(src_mask, (B, T, S), "the src_mask passed to the decoder")
            self_mask = check_mask(tgt_mask, (B, T, T), "the tgt_mask passed to the decoder")
            self.decoded.append({"tgt": tgt.detach().clone(), "src_mask": cross, "tgt_mask": self_mask})
            y = self.tgt_embed(tgt) + self.pos[:T]  # (B, T, D)
            # Broad, strong self-attention: what each position sees shapes the next layer everywhere.
            y = y + 3 * mix(y, y, self_mask, 0.3)
            y = torch.tanh(self.mix(y))
            y = y + 3 * mix(y, y, self_mask, 0.3)
            return y + 3 * mix(y, memory, cross)

        def forward(self, src, tgt, src_mask, tgt_mask):
            return self.generator(self.decode(tgt, self.encode(src, src_mask), src_mask, tgt_mask))

    _PROBE = ProbeSeq2Seq
    return _PROBE


def build_probe(inputs):
    vocab, d_model = inputs["src_embed.weight"].shape
    model = probe_class()(vocab, d_model, inputs["pos"].shape[0]).to(as_tensor(inputs["pos"]).dtype)
    model.load_state_dict({k: as_tensor(inputs[k]) for k in PROBE_KEYS})
    return model


def probe_weights(rng, vocab, d_model, max_len, dtype, never=None):
    """Weights of a probe model; token `never` (the padding id) is never the argmax."""
    w = {
        "src_embed.weight": rng.standard_normal((vocab, d_model)),
        "tgt_embed.weight": rng.standard_normal((vocab, d_model)),
        "pos": rng.standard_normal((max_len, d_model)),
        "mix.weight": rng.standard_normal((d_model, d_model)) / math.sqrt(d_model),
        "mix.bias": rng.standard_normal(d_model) * 0.1,
        "generator.weight": rng.standard_normal((vocab, d_model)) / d_model,
        "generator.bias": rng.standard_normal(vocab) * 0.1,
    }
    if never is not None:
        w["generator.bias"][never] = -1e3
    return {k: v.astype(dtype) for k, v in w.items()}


def padded_tokens(rng, n, batch, length, vocab, pad_id, first=None):
    """(n, batch, length) token ids; each row ends in a random amount of padding (row 0 of each batch: none)."""
    tokens = rng.integers(0, vocab, (n, batch, length))
    tokens[tokens == pad_id] = (pad_id + 1) % vocab
    if first is not None:
        tokens[..., 0] = first
    for i in range(n):
        for b in range(1, batch):
            n_pad = int(rng.integers(1, length - 1))
            tokens[i, b, length - n_pad:] = pad_id
    return tokens.astype(np.int64)


# --- train_step -------------------------------------------------------------------------------

def run_train_step(fn, inputs):
    import torch

    model = build_probe(inputs)
    optimizer = torch.optim.SGD(model.parameters(), lr=inputs["lr"])
    factors = [float(f) for f in inputs["lr_factors"]]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: factors[min(s, len(factors) - 1)])
    losses = []
    for i in range(inputs["src"].shape[0]):
        model.encoded.clear()
        model.decoded.clear()
        src, tgt = as_tensor(inputs["src"][i]), as_tensor(inputs["tgt"][i])
        if inputs.get("smoothing") is None:
            loss = fn(model, src, tgt, optimizer, scheduler, inputs["pad_id"])
        else:
            loss = fn(model, src, tgt, optimizer, scheduler, inputs["pad_id"], inputs["smoothing"])
        if type(loss) is torch.Tensor:
            raise StudentError("train_step should return the loss as a Python float (loss.item()), got a tensor")
        losses.append(as_float(loss, "train_step(...)"))
        if i == 0:
            if not model.decoded:
                raise StudentError("train_step never called the model (model(src, tgt_in, src_mask, tgt_mask))")
            first = model.decoded[0]
    outputs = {  # what the model was called with first: those problems are the easiest to read
        "tgt_in": first["tgt"], "src_mask": first["src_mask"], "tgt_mask": first["tgt_mask"],
        "loss": np.array(losses, dtype=np.float64),
        "lr_after": float(optimizer.param_groups[0]["lr"]),
    }
    for name, value in model.state_dict().items():
        outputs[f"{name} after"] = value.detach().clone()
    return outputs


def train_inputs(rng, n_steps=3, batch=3, src_len=6, tgt_len=7, vocab=9, d_model=8, pad_id=0, bos_id=1,
                 smoothing=0.1, dtype="float64", lr=0.02):
    return dict(
        probe_weights(rng, vocab, d_model, max(src_len, tgt_len) + 2, dtype),
        src=padded_tokens(rng, n_steps, batch, src_len, vocab, pad_id),
        tgt=padded_tokens(rng, n_steps, batch, tgt_len, vocab, pad_id, first=bos_id),
        pad_id=pad_id, smoothing=smoothing, lr=lr, lr_factors=np.array([1.0, 0.6, 0.3, 0.15, 0.1]),
    )


def train_public(rng):
    return [
        Case("three-steps-float64", train_inputs(rng), "3 steps on padded batches, pad_id=0, smoothing=0.1"),
        Case("default-smoothing-pad-4", train_inputs(rng, n_steps=2, pad_id=4, bos_id=2, smoothing=None),
             "smoothing left at its default (0.1), pad_id=4"),
    ]


# --- greedy_decode ----------------------------------------------------------------------------

def run_greedy(fn, inputs):
    import torch

    model = build_probe(inputs)
    src = as_tensor(inputs["src"])
    src_mask = (src != inputs["pad_id"]).unsqueeze(1)  # (B, 1, S)
    tokens = fn(model, src, src_mask, inputs["max_len"], inputs["bos_id"])
    if type(tokens) is not torch.Tensor:
        raise StudentError(f"should return a LongTensor (B, max_len), got {type(tokens).__name__}")
    return {
        "tokens": tokens,
        "tgt_masks": [d["tgt_mask"] for d in model.decoded],
        "src_masks": [d["src_mask"] for d in model.decoded],
    }


def greedy_inputs(rng, batch=3, src_len=5, max_len=6, vocab=10, d_model=8, pad_id=0, bos_id=1, dtype="float64"):
    return dict(
        probe_weights(rng, vocab, d_model, max(src_len, max_len) + 1, dtype, never=pad_id),
        src=padded_tokens(rng, 1, batch, src_len, vocab, pad_id)[0],
        pad_id=pad_id, max_len=max_len, bos_id=bos_id,
    )


def greedy_public(rng):
    return [
        Case("padded-batch-float64", greedy_inputs(rng), "3 sources with padding, max_len=6"),
        Case("bos-3-max-len-8", greedy_inputs(rng, batch=2, src_len=4, max_len=8, pad_id=2, bos_id=3),
             "bos_id=3, pad_id=2, max_len=8"),
        Case("max-len-1", greedy_inputs(rng, batch=2, max_len=1), "max_len=1: only the start token"),
    ]


# --- tiled attention (extra credit) -----------------------------------------------------------

def _largest_tensor_watch():
    """A TorchFunctionMode that remembers the largest tensor any torch call returns."""
    from torch.overrides import TorchFunctionMode

    import torch

    class Watch(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.largest = 0

        def see(self, value):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
            elif isinstance(value, (tuple, list)):
                for v in value:
                    self.see(v)

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.see(out)
            return out

    return Watch()


def _address_space_left(free_bytes):
    """Map, without touching, all of the address space but `free_bytes`; None when there is no limit."""
    import mmap
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as f:
            used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        return None
    size = soft - used - free_bytes
    if size <= 0:
        return None
    try:
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ)
    except OSError:
        return None


def run_tiled(fn, inputs):
    import torch

    if inputs.get("generate"):
        g = torch.Generator().manual_seed(int(inputs["seed"]))
        dtype = getattr(torch, inputs["dtype"])
        q, k, v = (torch.randn(n, d, generator=g, dtype=dtype) for n, d in (
            (inputs["lq"], inputs["d_k"]), (inputs["lk"], inputs["d_k"]), (inputs["lk"], inputs["d_v"])))
    else:
        q, k, v = (as_tensor(inputs[name]) for name in ("query", "key", "value"))
    block = inputs["block_size"]
    batch = math.prod(torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]))
    # Products of a (Lq, block) slice with a feature axis are allowed; (Lq, Lk) is not.
    budget = max(q.numel(), k.numel(), v.numel(), batch * q.size(-2) * block * max(q.size(-1), v.size(-1)))
    watch = _largest_tensor_watch()
    ballast = _address_space_left(inputs["free_mib"] * 2**20) if inputs.get("free_mib") else None
    try:
        with watch:
            output = fn(q, k, v, block)
    finally:
        if ballast is not None:
            ballast.close()
    return {"output": output, "scores_fit_in_blocks": watch.largest <= budget}


def tiled_inputs(rng, batch, lq, lk, d_k, d_v, block_size, dtype="float64", scale=1.0):
    return {
        "query": (rng.standard_normal((*batch, lq, d_k)) * scale).astype(dtype),
        "key": (rng.standard_normal((*batch, lk, d_k)) * scale).astype(dtype),
        "value": rng.standard_normal((*batch, lk, d_v)).astype(dtype),
        "block_size": block_size,
    }


def tiled_public(rng):
    return [
        Case("2d-even-blocks-float64", tiled_inputs(rng, (), 5, 8, 4, 3, 4), "Lk=8 in blocks of 4"),
        Case("3d-ragged-last-block-float64", tiled_inputs(rng, (2,), 4, 10, 6, 5, 4),
             "Lk=10 in blocks of 4: the last block has 2 keys"),
        Case("4d-float32", tiled_inputs(rng, (2, 3), 6, 7, 8, 8, 3, "float32"), "batch and heads, float32"),
        Case("block-larger-than-keys-float64", tiled_inputs(rng, (1,), 3, 5, 4, 2, 64), "block_size > Lk"),
        Case("large-scores-float64", tiled_inputs(rng, (2,), 4, 12, 8, 4, 3, scale=30.0),
             "scores of several hundred: the running maximum matters"),
        Case("long-keys-float64", tiled_inputs(rng, (), 64, 256, 4, 4, 16),
             "Lk=256 in blocks of 16: no tensor may hold more than (Lq, block_size) scores"),
    ]


def run_quiz(answer, inputs):
    return {"answer": answer}


EXERCISES = [
    Exercise("noam_lr", run_noam, noam_public),
    Exercise("warmup_cosine_lr", run_cosine, cosine_public),
    Exercise("make_optimizer", run_make_optimizer, optimizer_public),
    Exercise("label_smoothing_loss", run_smoothing, smoothing_public),
    Exercise("train_step", run_train_step, train_public, needs=("causal_mask", "padding_mask")),
    Exercise("greedy_decode", run_greedy, greedy_public, needs=("causal_mask",)),
    Exercise("tiled_attention", run_tiled, tiled_public),
]
