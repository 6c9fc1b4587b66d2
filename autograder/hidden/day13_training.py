"""Days 13-14, instructor only: hidden cases, and the mistakes students make, as code.

Never shipped to students. The release carries only these mistakes' outputs
on the public cases (as data), so the student's check can name them too.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..exercise import Case, Mistake
from ..exercises.day13_training import (
    cosine_case, greedy_inputs, noam_case, optimizer_inputs, smoothing_inputs, tiled_inputs, train_inputs,
)
from .transformer_mistakes import causal_mask, padding_mask

# --- hidden cases -----------------------------------------------------------------------------


def noam_hidden(rng):
    return [
        noam_case("paper-dense", np.arange(1, 30001, 97), 512, 4000, note="every 97th step up to 30000"),
        noam_case("boundary-2500", [2499, 2500, 2501], 1024, 2500, 1.0, "around step == warmup_steps"),
        noam_case("warmup-1", np.arange(1, 20), 16, 1, note="warmup_steps=1"),
        noam_case("factor-half", np.arange(1, 400, 7), 256, 100, 0.5, "factor=0.5"),
        noam_case("step-0-factor-3", [0], 64, 10, 3.0, "step 0 with factor=3"),
        noam_case("int-factor", [1, 5, 50, 500], 128, 50, 2, "an int factor"),
    ]


def cosine_hidden(rng):
    return [
        cosine_case("dense", np.arange(0, 25001, 125), 3e-4, 0.0, 2000, 20000, "min_lr=0, every 125th step"),
        cosine_case("boundaries", [0, 9, 10, 11, 59, 60, 61], 1.0, 0.25, 10, 60, "steps around both boundaries"),
        cosine_case("warmup-1", np.arange(0, 8), 2e-3, 1e-4, 1, 6, "warmup_steps=1, total_steps=6"),
        cosine_case("min-equals-max", [0, 3, 7, 12], 0.1, 0.1, 5, 10, "a constant rate after warm-up"),
        cosine_case("total-below-warmup", [0, 3], 1e-3, 0.0, 10, 5, invalid=True),
        cosine_case("negative-warmup", [0, 3], 1e-3, 0.0, -1, 5, invalid=True),
        cosine_case("zero-total", [0], 1e-3, 0.0, 0, 0, invalid=True),
    ]


def smoothing_hidden(rng):
    return [
        Case("2d-no-pad-float32", smoothing_inputs(rng, (8,), 11, 0.1, dtype="float32")),
        Case("3d-padding-float64", smoothing_inputs(rng, (3, 6), 9, 0.1, pad_id=0)),
        Case("4d-padding-float64", smoothing_inputs(rng, (2, 2, 3), 5, 0.25, pad_id=2)),
        Case("pad-none-explicit-float32", smoothing_inputs(rng, (4, 5), 6, 0.15, pad_id=None, dtype="float32")),
        Case("large-vocab-float64", smoothing_inputs(rng, (2, 4), 50, 0.1, pad_id=7, pad_fraction=0.5)),
        Case("all-padding-float32", smoothing_inputs(rng, (3, 2), 4, 0.2, pad_id=1, dtype="float32", all_pad=True)),
        Case("large-logits-float32", smoothing_inputs(rng, (2, 3), 5, 0.1, pad_id=0, dtype="float32", scale=500.0),
             tolerance=(1e-4, 1e-3)),
        Case("no-smoothing-no-pad-float64", smoothing_inputs(rng, (5,), 3, 0.0)),
    ]


def optimizer_hidden(rng):
    return [
        Case("paper-settings", optimizer_inputs(rng, 512, 4000, 4)),
        Case("warmup-1-factor-half", optimizer_inputs(rng, 8, 1, 6, factor=0.5)),
        Case("long-run", optimizer_inputs(rng, 64, 10, 25)),
        Case("float32-model", optimizer_inputs(rng, 16, 5, 8, factor=1.5, dtype="float32")),
    ]


def train_hidden(rng):
    return [
        Case("four-steps-float64", train_inputs(rng, n_steps=4, batch=4, src_len=7, tgt_len=5, vocab=11)),
        Case("float32", train_inputs(rng, dtype="float32"), tolerance=(1e-4, 1e-5)),
        Case("no-smoothing", train_inputs(rng, n_steps=2, smoothing=0.0, pad_id=5, bos_id=6)),
        Case("strong-smoothing-long-target", train_inputs(rng, n_steps=2, batch=2, src_len=4, tgt_len=9,
                                                            smoothing=0.3, pad_id=1, bos_id=0)),
    ]


def greedy_hidden(rng):
    return [
        Case("long-float64", greedy_inputs(rng, batch=4, src_len=7, max_len=10, vocab=13, d_model=12)),
        Case("float32", greedy_inputs(rng, dtype="float32", max_len=7, pad_id=3, bos_id=4)),
        Case("single-source", greedy_inputs(rng, batch=1, src_len=3, max_len=5, vocab=6)),
        Case("max-len-2", greedy_inputs(rng, batch=2, max_len=2, pad_id=1, bos_id=2)),
    ]


def tiled_hidden(rng):
    return [
        Case("block-size-1-float64", tiled_inputs(rng, (2,), 3, 5, 4, 3, 1)),
        Case("4d-large-scores-float32", tiled_inputs(rng, (2, 2), 5, 9, 8, 4, 4, "float32", scale=20.0),
             tolerance=(1e-3, 1e-4)),
        Case("single-key-float64", tiled_inputs(rng, (3,), 4, 1, 5, 2, 2)),
        Case("long-keys-float32", tiled_inputs(rng, (2,), 16, 300, 8, 8, 32, "float32")),
        Case("increasing-scores-float64", dict(_increasing_keys(rng), block_size=4),
             "keys whose scores grow block after block: the running sums must be rescaled"),
        # Holding the whole (Lq, Lk) score matrix takes 8000 * 8000 * 8 bytes = 488 MiB; during the call the
        # runner leaves only 256 MiB of the sandbox's address space free (the rest of the 4 GiB limit is mapped,
        # untouched), while a block of 256 keys takes 16 MiB. About 0.6 s of CPU for the reference.
        Case("memory-budget-float64",
             {"generate": True, "seed": 2024, "dtype": "float64", "lq": 8000, "lk": 8000, "d_k": 2, "d_v": 2,
              "block_size": 256, "free_mib": 256},
             "8000 x 8000 scores in float64 do not fit in the memory left; blocks of 256 keys do"),
    ]


def _increasing_keys(rng):
    q = rng.standard_normal((2, 3, 4))
    k = rng.standard_normal((2, 12, 4)) * np.linspace(0.5, 6.0, 12)[None, :, None]
    return {"query": q, "key": k, "value": rng.standard_normal((2, 12, 3))}


HIDDEN_CASES = {
    "noam_lr": noam_hidden,
    "warmup_cosine_lr": cosine_hidden,
    "label_smoothing_loss": smoothing_hidden,
    "make_optimizer": optimizer_hidden,
    "train_step": train_hidden,
    "greedy_decode": greedy_hidden,
    "tiled_attention": tiled_hidden,
}

# --- mistakes ---------------------------------------------------------------------------------


def _noam(kind=""):
    def noam_lr(step, d_model, warmup_steps, factor=1.0):
        if kind == "step0_zero" and step == 0:
            return 0.0
        if kind != "step0_error":
            step = max(step, 1)
        if kind == "factor_ignored":
            factor = 1.0
        scale = d_model ** 0.5 if kind == "sqrt_d_model" else d_model ** -0.5
        warm = step * warmup_steps ** 1.5 if kind == "warmup_pow" else step * warmup_steps ** -1.5
        pick = max if kind == "max" else min
        return factor * scale * pick(step ** -0.5, warm)

    return noam_lr


def _cosine(kind=""):
    def warmup_cosine_lr(step, max_lr, min_lr, warmup_steps, total_steps):
        if kind != "no_check" and not total_steps > warmup_steps >= 0:
            raise ValueError("need total_steps > warmup_steps >= 0")
        if step < warmup_steps:
            return max_lr * ((step + 1) if kind == "warmup_plus_one" else step) / warmup_steps
        end = warmup_steps + total_steps if kind == "decay_length" else total_steps
        if step >= end and kind != "no_clamp":
            return 0.0 if kind == "to_zero" else min_lr
        span = total_steps if kind == "decay_length" else total_steps - warmup_steps
        cos = 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / span))
        if kind == "forgets_min":
            return min_lr + cos * max_lr
        if kind == "to_zero":
            return cos * max_lr
        return min_lr + cos * (max_lr - min_lr)

    return warmup_cosine_lr


def _smoothing(kind=""):
    def label_smoothing_loss(logits, target, smoothing, pad_id=None):
        V = logits.size(-1)
        logits, target = logits.reshape(-1, V), target.reshape(-1)
        if kind == "nan_all_pad":
            return F.cross_entropy(logits, target, label_smoothing=smoothing,
                                   ignore_index=-100 if pad_id is None else pad_id)
        logp = torch.log(torch.softmax(logits, -1)) if kind == "log_softmax_by_hand" else torch.log_softmax(logits, -1)
        one_hot = F.one_hot(target, V).to(logits.dtype)
        if kind == "v_minus_1":
            q = one_hot * (1 - smoothing) + (1 - one_hot) * smoothing / (V - 1)
        elif kind == "ignored":
            q = one_hot
        else:
            q = one_hot * (1 - smoothing) + smoothing / V
        per_token = -(q * logp).sum(-1)
        if kind == "kl":
            per_token = per_token + torch.xlogy(q, q).sum(-1)
        keep = torch.ones_like(target, dtype=torch.bool)
        if pad_id is not None and kind != "pad_included":
            keep = target != pad_id
        total = (per_token * keep).sum()
        count = target.numel() if kind == "divides_by_all" else keep.sum().clamp(min=1)
        return total / count

    return label_smoothing_loss


noam_lr = _noam()
"""The reference schedule, by the name make_optimizer's runner looks up next to the mistakes below."""


def _optimizer(kind=""):
    def make_optimizer(model, d_model, warmup_steps, factor=1.0):
        betas = (0.9, 0.999) if kind == "default_betas" else (0.9, 0.98)
        eps = 1e-8 if kind == "default_eps" else 1e-9
        lr = 1e-3 if kind == "lr_not_one" else 1.0
        f = 1.0 if kind == "factor_ignored" else factor
        if kind == "adamw":
            optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, eps=eps)
        else:
            optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, eps=eps)
        shift = 0 if kind == "off_by_one" else 1
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: noam_lr(s + shift, d_model, warmup_steps, f))
        return optimizer, scheduler

    return make_optimizer


def _train(kind=""):
    def train_step(model, src, tgt, optimizer, scheduler, pad_id, smoothing=0.1):
        if kind == "not_shifted":
            tgt_in, tgt_out = tgt, tgt
        elif kind == "shifted_wrong_way":
            tgt_in, tgt_out = tgt[:, 1:], tgt[:, :-1]
        else:
            tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
        T = tgt_in.size(1)
        src_mask = None if kind == "no_src_mask" else padding_mask(src, pad_id)
        causal = causal_mask(T)
        tgt_pad = padding_mask(tgt_in, pad_id)
        tgt_mask = {"no_causal": tgt_pad, "no_tgt_padding": causal}.get(kind, tgt_pad & causal)
        logits = model(src, tgt_in, src_mask, tgt_mask)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1),
                               label_smoothing=0.0 if kind == "no_smoothing" else smoothing,
                               ignore_index=-100 if kind == "pad_targets_included" else pad_id)
        if kind != "no_zero_grad":
            optimizer.zero_grad()
        loss.backward()
        if kind == "scheduler_first":
            scheduler.step()
            optimizer.step()
        else:
            optimizer.step()
            scheduler.step()
        return loss.item()

    return train_step


def _greedy(kind=""):
    @torch.no_grad()
    def greedy_decode(model, src, src_mask, max_len, bos_id):
        memory = model.encode(src, src_mask)
        ys = torch.full((src.size(0), 1), bos_id, dtype=torch.long)
        for _ in range(max_len if kind == "max_len_steps" else max_len - 1):
            T = ys.size(1)
            tgt_mask = None if kind == "no_causal" else causal_mask(T)
            out = model.decode(ys, memory, None if kind == "no_src_mask" else src_mask, tgt_mask)
            logits = model.generator(out[:, 0] if kind == "first_position" else out[:, -1])
            ys = torch.cat([ys, logits.argmax(dim=-1, keepdim=True)], dim=1)
        return ys

    return greedy_decode


def _tiled(kind=""):
    def tiled_attention(query, key, value, block_size):
        scale = 1.0 if kind == "no_scaling" else 1.0 / math.sqrt(query.size(-1))
        if kind == "full_matrix":
            weights = torch.softmax(query @ key.transpose(-2, -1) * scale, dim=-1)
            return weights @ value
        Lk = key.size(-2)
        stop = Lk - Lk % block_size if kind == "drops_last_block" and Lk > block_size else Lk
        shape = torch.broadcast_shapes(query.shape[:-1], key.shape[:-2] + (query.size(-2),))
        m = torch.full((*shape, 1), float("-inf"), dtype=query.dtype)
        if kind == "no_running_max":
            m = torch.zeros((*shape, 1), dtype=query.dtype)
        l = torch.zeros((*shape, 1), dtype=query.dtype)
        acc = torch.zeros((*shape, value.size(-1)), dtype=query.dtype)
        for start in range(0, stop, block_size):
            s = query @ key[..., start:start + block_size, :].transpose(-2, -1) * scale  # (..., Lq, b)
            m_new = m if kind == "no_running_max" else torch.maximum(m, s.amax(-1, keepdim=True))
            p = torch.exp(s - m_new)
            fix = torch.ones_like(m) if kind == "no_rescale" else torch.exp(m - m_new)
            l = l * fix + p.sum(-1, keepdim=True)
            acc = acc * fix + p @ value[..., start:start + block_size, :]
            m = m_new
        return acc / l

    return tiled_attention


MISTAKES = {
    "noam_lr": [
        Mistake("max_instead_of_min", "max() is used instead of min()",
                "warm-up is the smaller of the two terms early on: min(step**-0.5, step * warmup_steps**-1.5)",
                _noam("max")),
        Mistake("warmup_pow_positive", "warmup_steps**1.5 instead of warmup_steps**-1.5",
                "the warm-up term is step * warmup_steps**-1.5 (a negative exponent): it grows linearly from 0 "
                "and meets step**-0.5 at step == warmup_steps", _noam("warmup_pow")),
        Mistake("step0_zero_division", "step 0 raises ZeroDivisionError",
                "0 ** -0.5 is a division by zero: let a step below 1 count as 1, step = max(step, 1)",
                _noam("step0_error")),
        Mistake("step0_is_zero", "step 0 gives a rate of 0",
                "the spec counts a step below 1 as step 1 (step = max(step, 1)), so step 0 gets the rate of step 1",
                _noam("step0_zero")),
        Mistake("factor_ignored", "the factor is not applied", "multiply the whole rate by factor",
                _noam("factor_ignored")),
        Mistake("sqrt_d_model", "the rate is multiplied by sqrt(d_model) instead of divided",
                "the paper's rate scales with d_model**-0.5: bigger models get smaller rates", _noam("sqrt_d_model")),
    ],
    "warmup_cosine_lr": [
        Mistake("total_is_decay_length", "total_steps is read as the length of the decay",
                "total_steps is the step at which the decay ends (counted from 0, warm-up included): divide "
                "(step - warmup_steps) by (total_steps - warmup_steps)", _cosine("decay_length")),
        Mistake("warmup_off_by_one", "warm-up uses step + 1",
                "the rate during warm-up is max_lr * step / warmup_steps, so step 0 has rate 0", _cosine("warmup_plus_one")),
        Mistake("no_clamp_after_total", "the cosine keeps going after total_steps",
                "after total_steps the rate stays at min_lr; without a check the cosine climbs back up",
                _cosine("no_clamp")),
        Mistake("min_lr_not_subtracted", "the cosine term is scaled by max_lr instead of (max_lr - min_lr)",
                "min_lr + 0.5 * (1 + cos(...)) * (max_lr - min_lr) starts at max_lr and ends at min_lr",
                _cosine("forgets_min")),
        Mistake("decays_to_zero", "the rate decays to 0 instead of min_lr", "add min_lr back: the decay ends at min_lr",
                _cosine("to_zero")),
        Mistake("no_value_error", "invalid arguments are not rejected",
                "raise ValueError unless total_steps > warmup_steps >= 0, before computing anything",
                _cosine("no_check")),
    ],
    "label_smoothing_loss": [
        Mistake("smoothing_over_v_minus_1", "the smoothing mass is spread over the V-1 wrong classes",
                "PyTorch's convention (and this course's) spreads smoothing/V over all V classes, the true one "
                "included: the true class gets 1 - smoothing + smoothing/V", _smoothing("v_minus_1")),
        Mistake("pad_targets_included", "padding targets are included in the loss",
                "drop the positions where target == pad_id from both the sum and the count", _smoothing("pad_included")),
        Mistake("mean_over_all_positions", "the sum over real tokens is divided by all positions, padding included",
                "divide by the number of non-padding targets", _smoothing("divides_by_all")),
        Mistake("kl_divergence_form", "the loss is the KL divergence KL(q || p), not the cross-entropy",
                "KL(q || p) is the cross-entropy minus the entropy of q: the same gradients, but a different value; "
                "compute -(q * log_softmax(logits)).sum(-1)", _smoothing("kl")),
        Mistake("smoothing_ignored", "the smoothing is not applied",
                "mix the one-hot target with the uniform distribution: q = (1 - smoothing) * one_hot + smoothing / V",
                _smoothing("ignored")),
        Mistake("log_of_softmax", "log(softmax(x)) underflows for large logits",
                "use torch.log_softmax (or F.log_softmax): it never takes the log of 0", _smoothing("log_softmax_by_hand")),
        Mistake("nan_when_all_padding", "the loss is NaN when every target is padding",
                "a mean over zero tokens is 0/0; divide by the number of real tokens clamped to at least 1",
                _smoothing("nan_all_pad")),
    ],
    "make_optimizer": [
        Mistake("default_betas", "Adam's default betas (0.9, 0.999) are used",
                "the paper uses betas=(0.9, 0.98)", _optimizer("default_betas")),
        Mistake("default_eps", "Adam's default eps (1e-8) is used", "the paper uses eps=1e-9", _optimizer("default_eps")),
        Mistake("scheduler_off_by_one", "the schedule is one step behind",
                "LambdaLR calls the lambda with 0 before the first optimizer step, so the k-th step (k = 1, 2, ...) "
                "uses lambda(k - 1): use lambda s: noam_lr(s + 1, ...)", _optimizer("off_by_one")),
        Mistake("base_lr_not_one", "the optimizer's lr is not 1.0",
                "LambdaLR multiplies the optimizer's lr by the lambda: create Adam with lr=1.0 so that the rate "
                "is exactly noam_lr", _optimizer("lr_not_one")),
        Mistake("factor_ignored", "the factor is not passed to the schedule",
                "pass factor on to noam_lr", _optimizer("factor_ignored")),
        Mistake("adamw_weight_decay", "AdamW (with its default weight decay) is used",
                "the paper uses plain Adam without weight decay: torch.optim.Adam", _optimizer("adamw")),
    ],
    "train_step": [
        Mistake("targets_not_shifted", "the targets are not shifted",
                "feed tgt[:, :-1] to the model and score its predictions against tgt[:, 1:]: position t predicts "
                "token t + 1", _train("not_shifted")),
        Mistake("shifted_wrong_way", "the decoder input and the targets are swapped",
                "the decoder reads tgt_in = tgt[:, :-1] (it starts with the start token) and predicts tgt_out = tgt[:, 1:]",
                _train("shifted_wrong_way")),
        Mistake("no_causal_mask", "the causal mask is missing in training",
                "tgt_mask = padding_mask(tgt_in, pad_id) & causal_mask(T): without it position t sees the token "
                "it must predict", _train("no_causal")),
        Mistake("no_padding_in_tgt_mask", "the target mask has no padding part",
                "combine both: padding_mask(tgt_in, pad_id) & causal_mask(T)", _train("no_tgt_padding")),
        Mistake("no_src_mask", "no source padding mask is passed",
                "src_mask = padding_mask(src, pad_id), so that no query attends to padding in the source",
                _train("no_src_mask")),
        Mistake("pad_targets_included", "padding targets are included in the loss",
                "pass pad_id to the loss (ignore_index=pad_id) so that padding positions do not count",
                _train("pad_targets_included")),
        Mistake("smoothing_ignored", "the loss has no label smoothing", "use the smoothing argument in the loss",
                _train("no_smoothing")),
        Mistake("scheduler_before_optimizer", "the scheduler is stepped before the optimizer",
                "call optimizer.step() first, then scheduler.step(): otherwise every step uses the next step's rate",
                _train("scheduler_first")),
        Mistake("no_zero_grad", "the gradients are not zeroed",
                "call optimizer.zero_grad() before loss.backward(): gradients add up across steps otherwise",
                _train("no_zero_grad")),
    ],
    "greedy_decode": [
        Mistake("no_causal_mask", "the decoder runs without a causal mask",
                "pass tgt_mask = causal_mask(ys.size(1)) to model.decode at every step, as in training",
                _greedy("no_causal")),
        Mistake("first_position", "the next token is read from the first position instead of the last",
                "the prediction for the next token is at the last position: model.generator(out[:, -1])",
                _greedy("first_position")),
        Mistake("max_len_steps", "the loop runs max_len times",
                "the start token counts: loop max_len - 1 times so that the result has max_len tokens",
                _greedy("max_len_steps")),
        Mistake("no_src_mask", "the source padding mask is not passed to the decoder",
                "pass src_mask to model.decode too: cross-attention must not read padding", _greedy("no_src_mask")),
    ],
    "tiled_attention": [
        Mistake("full_score_matrix", "the full (Lq, Lk) score matrix is held in memory",
                "loop over key blocks: compute only query @ key_block^T (Lq x block_size) at a time, and keep a "
                "running maximum, a running sum and a running weighted sum of values", _tiled("full_matrix")),
        Mistake("no_rescale", "the running sums are not rescaled when the maximum grows",
                "when the maximum goes from m to m_new, multiply the running sum and the accumulator by "
                "exp(m - m_new) before adding the new block", _tiled("no_rescale")),
        Mistake("no_scaling", "the scores are not scaled", "divide the scores by sqrt(d_k)", _tiled("no_scaling")),
        Mistake("drops_last_block", "the last, shorter block of keys is skipped",
                "range(0, Lk, block_size) covers a last block shorter than block_size", _tiled("drops_last_block")),
        Mistake("no_running_max", "exp() is taken of raw scores (no running maximum)",
                "subtract the running maximum before exp, or large scores overflow to inf", _tiled("no_running_max")),
    ],
}
