"""Days 8-9, instructor only: hidden cases, and the mistakes students make, as code.

Never shipped to students. The release carries only these mistakes' outputs
on the public cases (as data), so the student's check can name them too.
"""
from __future__ import annotations

from ..exercise import Case, Mistake
from ..exercises.day08_multi_head_attention import (
    count_case, merge_case, mha_inputs, random_mask, split_case, tril,
)
from .transformer_mistakes import multi_head_attention


def split_hidden(rng):
    return [
        split_case(rng, "batch-1-float32", 1, 6, 12, 3, "float32"),
        split_case(rng, "long-float64", 2, 17, 24, 6),
        split_case(rng, "width-1-heads-float32", 2, 4, 8, 8, "float32"),
        split_case(rng, "single-position-float64", 3, 1, 6, 2),
        split_case(rng, "paper-512-8-heads-float32", 2, 10, 512, 8, "float32"),
    ]


def merge_hidden(rng):
    return [
        merge_case(rng, "batch-1-float32", 1, 3, 6, 4, "float32"),
        merge_case(rng, "many-heads-float64", 2, 8, 5, 2),
        merge_case(rng, "single-position-float64", 2, 4, 1, 3),
        merge_case(rng, "width-1-heads-float32", 3, 6, 4, 1, "float32"),
    ]


def mha_hidden(rng):
    return [
        # init_check: MultiHeadAttention(d_model, num_heads) must raise ValueError exactly when h does not divide d.
        Case("one-head-causal-float64",
             mha_inputs(rng, 2, 4, 4, 8, 1, self_attention=True, mask=tril(4), init_check=[12, 5])),
        Case("width-1-heads-float32",
             mha_inputs(rng, 2, 5, 5, 6, 6, "float32", self_attention=True, init_check=[7, 2])),
        Case("cross-padding-float64",
             mha_inputs(rng, 3, 4, 6, 12, 2, mask=random_mask(rng, (3, 1, 6)), init_check=[12, 3])),
        Case("cross-mask-3d-float32", mha_inputs(rng, 2, 3, 5, 8, 2, "float32", mask=random_mask(rng, (2, 3, 5)))),
        Case("cross-mask-4d-float64", mha_inputs(rng, 2, 5, 3, 12, 3, mask=random_mask(rng, (2, 1, 5, 3)))),
        Case("fully-masked-row-float64",
             mha_inputs(rng, 2, 5, 5, 8, 2, self_attention=True, mask=random_mask(rng, (2, 5, 5), empty_rows=(3,)))),
        Case("causal-8-heads-float32", mha_inputs(rng, 2, 7, 7, 32, 8, "float32", self_attention=True, mask=tril(7))),
        Case("no-bias-padding-float64",
             mha_inputs(rng, 4, 6, 6, 16, 4, self_attention=True, bias=False, mask=random_mask(rng, (4, 1, 6), 0.6))),
        Case("d-model-128-8-heads-float32", mha_inputs(rng, 1, 4, 4, 128, 8, "float32")),
        Case("weights-before-dropout-float32",
             mha_inputs(rng, 2, 3, 5, 8, 2, "float32", dropout=0.3, train=True, seed=5)),
        Case("gradients-float32",
             mha_inputs(rng, 2, 4, 4, 8, 2, "float32", self_attention=True, mask=random_mask(rng, (2, 4, 4)),
                        grad=True, probe=rng.standard_normal((2, 4, 8)).astype("float32"))),
        Case("gradients-fully-masked-float64",
             mha_inputs(rng, 2, 3, 5, 12, 4, mask=random_mask(rng, (2, 1, 3, 5), empty_rows=(1,)), grad=True,
                        probe=rng.standard_normal((2, 3, 12)))),
    ]


HIDDEN_CASES = {
    "split_heads": split_hidden,
    "merge_heads": merge_hidden,
    "MultiHeadAttention": mha_hidden,
    "mha_parameter_count": lambda rng: [
        count_case("bert-base-768-12", 768, 12),
        count_case("no-bias-1024-16", 1024, 16, bias=False),
        count_case("tiny-6-3", 6, 3, bias=True),
        count_case("single-head-no-bias-32", 32, 1, bias=False),
        count_case("paper-512-1-head", 512, 1, bias=True),
        count_case("wide-4096-32", 4096, 32, bias=True),
    ],
}


# split_heads / merge_heads

def _split(kind):
    def split_heads(x, num_heads):
        B, L, D = x.shape
        d_k = D // num_heads
        if kind == "view":
            return x.reshape(B, num_heads, L, d_k)
        if kind == "not_moved":
            return x.reshape(B, L, num_heads, d_k)
        return x.reshape(B, L, d_k, num_heads).permute(0, 3, 1, 2)  # interleaved

    return split_heads


def _merge(kind):
    def merge_heads(x):
        B, h, L, d_k = x.shape
        if kind == "view":
            return x.reshape(B, L, h * d_k)
        if kind == "no_contiguous":
            return x.transpose(1, 2).view(B, L, h * d_k)
        return x.permute(0, 2, 3, 1).reshape(B, L, h * d_k)  # interleaved

    return merge_heads


# MultiHeadAttention: the family of modules is in transformer_mistakes (Days 10-14 build on it)

MHA_MISTAKES = [
    Mistake("split_view_no_transpose", "the heads are split with view(B, h, L, d_k) and no transpose",
            "view as (B, L, h, d_k) first, then .transpose(1, 2): a plain view to (B, h, L, d_k) mixes "
            "positions into the heads", multi_head_attention(split="view")),
    Mistake("split_and_merge_with_view", "the heads are split and merged with a bare view (no transposes)",
            "split_heads needs view(B, L, h, d_k) then transpose(1, 2), and merge_heads the reverse; if your "
            "forward calls them, fix them first (their own checks show it)",
            multi_head_attention(split="view", merge="view")),
    Mistake("merge_without_transpose", "the heads are merged without moving the head axis back",
            "merge with x.transpose(1, 2).contiguous().view(B, Lq, d_model); reshaping (B, h, L, d_k) "
            "straight to (B, L, d_model) scrambles positions and heads", multi_head_attention(merge="view")),
    Mistake("no_output_projection", "the output projection W_o is not applied",
            "after merging the heads, return self.W_o(merged): W_o mixes the heads' outputs",
            multi_head_attention(project=False)),
    Mistake("scaled_by_sqrt_d_model", "the scores are scaled by sqrt(d_model) instead of sqrt(d_k)",
            "each head works in d_k = d_model // num_heads dimensions: divide by math.sqrt(self.d_k) "
            "(Day 6's function does this when you pass it the split heads)", multi_head_attention(scale="d_model")),
    Mistake("mask_not_broadcast_over_heads", "a (B, Lq, Lk) or (B, 1, Lk) mask is used without a head axis",
            "the scores are (B, h, Lq, Lk): when mask.dim() == 3, use mask.unsqueeze(1) so the same mask "
            "applies to every head (otherwise batch b's mask lands on head b, or broadcasting fails)",
            multi_head_attention(mask_mode="as_given")),
    Mistake("mask_head_axis_added_twice", "a head axis is inserted into a mask that does not need one",
            "insert the head axis only for 3-D masks (B, Lq, Lk) or (B, 1, Lk); a 4-D (B, 1, Lq, Lk) mask "
            "already has it and a 2-D (Lq, Lk) mask broadcasts as it is", multi_head_attention(mask_mode="always")),
    Mistake("mask_ignored", "the mask is not used",
            "pass the mask on to the attention: scaled_dot_product_attention(q, k, v, mask)",
            multi_head_attention(mask_mode="ignored")),
    Mistake("values_from_key", "the values are computed from the key input",
            "v = self.W_v(value): in cross-attention key and value can differ",
            multi_head_attention(values_from="key")),
    Mistake("key_length_from_query", "the keys are reshaped with the query's length",
            "take the key/value length from key.size(1): in cross-attention Lk differs from Lq",
            multi_head_attention(key_length="query")),
    Mistake("weights_after_dropout", "the returned weights are the ones after dropout",
            "return the softmax weights from before dropout; use the dropped-out copy only to mix the values",
            multi_head_attention(returned="dropped")),
    Mistake("no_dropout", "dropout is never applied",
            "mix the values with the dropped-out weights, self.dropout(weights) @ v: in training mode the output "
            "depends on it (self.dropout does nothing in eval mode or with dropout=0.0)",
            multi_head_attention(dropout=False)),
    Mistake("weights_averaged_over_heads", "the returned weights are averaged over the heads",
            "return the weights of every head, shape (B, h, Lq, Lk) (nn.MultiheadAttention averages them "
            "unless average_attn_weights=False)", multi_head_attention(returned="mean")),
]


# mha_parameter_count

def _count(kind):
    def mha_parameter_count(d_model, num_heads, bias=True):
        square, b = d_model * d_model, d_model
        return {
            "no_biases": 4 * square,
            "biases_always": 4 * (square + b),
            "per_head": num_heads * 3 * (square + (b if bias else 0)) + square + (b if bias else 0),
            "no_output": 3 * (square + (b if bias else 0)),
        }[kind]

    return mha_parameter_count


MISTAKES = {
    "split_heads": [
        Mistake("view_no_transpose", "the heads are split with view(B, h, L, d_k) and no transpose",
                "view as (B, L, h, d_k), then .transpose(1, 2); viewing straight to (B, h, L, d_k) cuts the "
                "memory in the wrong order, so a 'head' holds pieces of several positions", _split("view")),
        Mistake("head_axis_not_moved", "the result has shape (B, L, h, d_k)",
                "move the head axis in front of the positions with .transpose(1, 2): (B, h, L, d_k)",
                _split("not_moved")),
        Mistake("interleaved", "head i gets every h-th feature instead of a block of d_k features",
                "view as (B, L, num_heads, d_k), not (B, L, d_k, num_heads): head i owns features "
                "[i*d_k, (i+1)*d_k)", _split("interleaved")),
    ],
    "merge_heads": [
        Mistake("view_no_transpose", "the heads are merged with view/reshape and no transpose",
                "move the head axis back first: x.transpose(1, 2) gives (B, L, h, d_k), then "
                ".contiguous().view(B, L, h * d_k)", _merge("view")),
        Mistake("no_contiguous", "view is called on a transposed (non-contiguous) tensor",
                "after .transpose(1, 2) the memory is no longer in row order: call .contiguous() before "
                ".view, or use .reshape", _merge("no_contiguous")),
        Mistake("interleaved", "the features of the heads are interleaved",
                "transpose(1, 2) (not permute(0, 2, 3, 1)): head i's d_k features must stay together as "
                "block [i*d_k, (i+1)*d_k)", _merge("interleaved")),
    ],
    "MultiHeadAttention": MHA_MISTAKES,
    "mha_parameter_count": [
        Mistake("no_biases", "the biases are not counted",
                "each nn.Linear(d_model, d_model) has d_model*d_model weights plus d_model biases when bias=True",
                _count("no_biases")),
        Mistake("biases_when_false", "biases are counted when bias=False",
                "with bias=False the four projections have weights only: 4 * d_model**2", _count("biases_always")),
        Mistake("full_projections_per_head", "every head is counted with its own d_model x d_model projections",
                "the heads share W_q, W_k, W_v: each head uses d_k = d_model // h of their columns, so the count "
                "does not depend on num_heads", _count("per_head")),
        Mistake("no_output_projection", "the output projection W_o is not counted",
                "there are four projections: W_q, W_k, W_v and W_o", _count("no_output")),
    ],
}
