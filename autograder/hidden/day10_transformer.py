"""Days 10-12, instructor only: hidden cases, and the mistakes students make, as code.

Never shipped to students. The module mistakes are complete drop-in modules
(same constructor, same state_dict keys) from transformer_mistakes, built on its
reference attention, so that they run without the student's or the notebook's pieces.
"""
from __future__ import annotations

import torch

from ..exercise import Case, Mistake
from ..exercises.day10_transformer import (
    count_case, decoder_inputs, ff_inputs, layer_inputs, ln_inputs, pe_case, transformer_inputs,
)
from .transformer_mistakes import decoder_layer, encoder_layer, feed_forward, transformer

# ---------------------------------------------------------------- hidden cases


def pe_hidden(rng):
    return [
        pe_case("1x2", 1, 2),
        pe_case("100x64", 100, 64),
        pe_case("1000x64", 1000, 64),
        pe_case("24x512", 24, 512),
        Case("odd-d_model-9", {"max_len": 12, "d_model": 9, "expect_error": True}),
        Case("odd-d_model-1", {"max_len": 3, "d_model": 1, "expect_error": True}),
    ]


def ln_hidden(rng):
    constant = ln_inputs(rng, (6, 10), "float64")
    constant["x"][[1, 4]] = 2.5  # rows with zero variance: the output there is beta
    return [
        Case("4d-float64", ln_inputs(rng, (2, 2, 3, 8), "float64")),
        Case("3d-float64", ln_inputs(rng, (3, 5, 6), "float64")),
        Case("constant-rows-float64", constant),
        Case("eps-0.1-float32", ln_inputs(rng, (3, 7, 16), "float32", eps=0.1)),
        Case("tiny-variance-float32", ln_inputs(rng, (2, 3, 24), "float32", scale=0.005)),
        Case("large-offset-3d-float32", ln_inputs(rng, (2, 3, 64), "float32", scale=2.0, offset=-5000.0),
             tolerance=(1e-3, 1e-3)),
    ]


def ff_hidden(rng):
    return [
        Case("wide-float64", ff_inputs(rng, 3, 7, 32, 128, "float64", dropout=0.3)),
        Case("one-position-float32", ff_inputs(rng, 2, 1, 16, 64, "float32")),
        Case("narrow-d_ff-float64", ff_inputs(rng, 2, 4, 16, 8, "float64", dropout=0.0)),
    ]


def encoder_hidden(rng):
    return [
        Case("padded-float32", layer_inputs(rng, 2, 5, 32, 4, 64, "float32", lengths=[5, 2])),
        Case("no-mask-float64", layer_inputs(rng, 3, 4, 16, 2, 32, "float64")),
        Case("8-heads-float64", layer_inputs(rng, 2, 6, 32, 8, 32, "float64", lengths=[3, 6], dropout=0.0)),
        Case("single-position-float64", layer_inputs(rng, 2, 1, 16, 2, 32, "float64", lengths=[1, 1])),
        Case("all-real-float32", layer_inputs(rng, 1, 9, 16, 4, 16, "float32", lengths=[9])),
        Case("padding-invariance-float32",
             layer_inputs(rng, 2, 8, 32, 4, 64, "float32", lengths=[2, 6], check="padding")),
    ]


def decoder_hidden(rng):
    # Property cases keep S != T: there the mistakes that only run when S == T raise, so the one a failing
    # property really points to is the one named.
    return [
        Case("cross-lengths-float32",
             decoder_inputs(rng, 2, 3, 8, 32, 4, 64, "float32", src_lengths=[8, 5], tgt_lengths=[3, 2])),
        Case("same-lengths-8-heads-float64",
             decoder_inputs(rng, 2, 5, 5, 32, 8, 48, "float64", src_lengths=[5, 3], tgt_lengths=[4, 5])),
        Case("same-lengths-no-padding-float64", decoder_inputs(rng, 1, 3, 3, 16, 2, 32, "float64", src_lengths=[3])),
        Case("same-lengths-7-float32",
             decoder_inputs(rng, 2, 7, 7, 16, 4, 32, "float32", src_lengths=[4, 7], tgt_lengths=[7, 5])),
        Case("one-target-position-float64", decoder_inputs(rng, 2, 1, 4, 16, 2, 32, "float64", src_lengths=[4, 2])),
        Case("no-src-mask-float64", decoder_inputs(rng, 2, 4, 6, 16, 2, 32, "float64")),
        Case("causality-float32",
             decoder_inputs(rng, 2, 7, 5, 32, 4, 64, "float32", src_lengths=[5, 5], check="causal", split=2)),
        Case("causality-first-position",
             decoder_inputs(rng, 3, 5, 3, 16, 2, 32, "float64", src_lengths=[3, 3, 3], check="causal", split=1)),
        Case("padding-invariance-float32",
             decoder_inputs(rng, 3, 4, 6, 16, 4, 32, "float32", src_lengths=[6, 2, 4], check="padding")),
    ]


def transformer_hidden(rng):
    return [
        Case("one-layer-float32",
             transformer_inputs(rng, 2, 6, 4, 16, 4, 1, 32, "float32", src_lengths=[6, 3], tgt_lengths=[4, 4])),
        Case("two-layers-float64",
             transformer_inputs(rng, 2, 5, 7, 16, 2, 2, 32, "float64", src_vocab=21, tgt_vocab=15,
                                src_lengths=[3, 5], tgt_lengths=[7, 6])),
        Case("same-lengths-float64",
             transformer_inputs(rng, 3, 5, 5, 32, 4, 1, 64, "float64", src_lengths=[5, 2, 4],
                                tgt_lengths=[5, 5, 3], max_len=None)),
        Case("one-target-token-float64",
             transformer_inputs(rng, 2, 4, 1, 16, 2, 1, 32, "float64", src_lengths=[4, 2])),
        Case("causality-float32",
             transformer_inputs(rng, 2, 5, 8, 16, 4, 1, 32, "float32", check="causal", split=2)),
        Case("padding-invariance-float32",
             transformer_inputs(rng, 3, 7, 4, 16, 2, 2, 32, "float32", src_lengths=[7, 2, 5], check="padding")),
        Case("permutation-two-layers",
             transformer_inputs(rng, 1, 8, 3, 16, 2, 2, 32, "float64", check="permutation")),
        Case("whole-source-float32",
             transformer_inputs(rng, 2, 5, 3, 16, 2, 2, 32, "float32", check="whole_source")),
    ]


HIDDEN_CASES = {
    "sinusoidal_positional_encoding": pe_hidden,
    "layer_norm": ln_hidden,
    "PositionwiseFeedForward": ff_hidden,
    "EncoderLayer": encoder_hidden,
    "DecoderLayer": decoder_hidden,
    "Transformer": transformer_hidden,
    "transformer_parameter_count": lambda rng: [
        count_case("tiny", 5, 7, 8, 1, 3, 8),
        count_case("no-layers", 20, 30, 16, 4, 0, 64),
        count_case("wide-feed-forward", 100, 120, 32, 4, 1, 256),
        count_case("medium", 8000, 6000, 256, 8, 3, 1024),
    ],
    "quiz_architecture_for_task": lambda rng: [],
    "diagram_labels": lambda rng: [],  # its public cases, one per box, are graded in full
}

# ---------------------------------------------------------------- the mistakes


def _pe_mistake(kind):
    def sinusoidal_positional_encoding(max_len, d_model):
        if d_model % 2 and kind not in ("no_check_crash", "no_check_truncate"):
            raise ValueError("d_model must be even")
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (L, 1)
        if kind == "from_one":
            pos = pos + 1
        two_i = torch.arange(0, d_model, 2, dtype=torch.float32)  # (ceil(d/2),)
        exponent = two_i / 2 / d_model if kind == "i_over_d" else two_i / d_model
        angle = pos / 10000.0 ** exponent  # (L, ceil(d/2))
        if kind == "halves":
            return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)
        pe = torch.zeros(max_len, d_model)
        if kind == "column_exponent":
            odd_angle = pos / 10000.0 ** ((two_i + 1) / d_model)
            pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(odd_angle)
            return pe
        first, second = (torch.cos, torch.sin) if kind == "swapped" else (torch.sin, torch.cos)
        pe[:, 0::2] = first(angle)
        pe[:, 1::2] = second(angle[:, : d_model // 2] if kind == "no_check_truncate" else angle)
        return pe.double() if kind == "float64" else pe

    return sinusoidal_positional_encoding


def _ln_mistake(kind):
    def layer_norm(x, gamma, beta, eps=1e-5):
        dims = {"batch_axis": 0, "dim1": 1, "all_axes": tuple(range(x.dim()))}.get(kind, -1)
        mean = x.mean(dim=dims, keepdim=True)
        if kind == "one_pass":
            var = (x * x).mean(dim=dims, keepdim=True) - mean * mean
        else:
            var = x.var(dim=dims, keepdim=True, unbiased=kind == "unbiased")
        if kind == "eps_outside":
            y = (x - mean) / (var.sqrt() + eps)
        elif kind == "no_eps":
            y = (x - mean) / var.sqrt()
        else:
            y = (x - mean) / torch.sqrt(var + eps)
        return y if kind == "no_affine" else gamma * y + beta

    return layer_norm


def _count_mistake(kind):
    def transformer_parameter_count(src_vocab_size, tgt_vocab_size, d_model, num_heads, num_layers, d_ff):
        d, bias = d_model, 0 if kind == "no_biases" else 1
        attention = 4 * (d * d + bias * d)
        if kind == "per_head":
            attention = 4 * num_heads * d * d + 4 * d
        ff = d * d_ff + bias * d_ff + d_ff * d + bias * d
        norm = 0 if kind == "no_norms" else 2 * d
        encoder = attention + ff + 2 * norm
        decoder = (1 if kind == "no_cross" else 2) * attention + ff + (2 if kind == "no_cross" else 3) * norm
        layers = 1 if kind == "layers_once" else num_layers
        embed = src_vocab_size * d + (0 if kind == "shared_embeddings" else tgt_vocab_size * d)
        generator = 0 if kind == "no_generator" else (0 if kind == "shared_embeddings" else tgt_vocab_size * d)
        generator += 0 if kind == "no_generator" else bias * tgt_vocab_size
        extra = 5000 * d if kind == "counts_buffer" else 0
        return int(layers * (encoder + decoder) + embed + generator + extra)

    return transformer_parameter_count


DIAGRAM = {1: "embedding", 2: "positional encoding", 3: "self-attention", 4: "feed-forward", 5: "add & norm",
           6: "masked self-attention", 7: "cross-attention", 8: "feed-forward", 9: "linear", 10: "softmax"}
"""The labels of the Day 10 diagram (the solution notebook's `diagram_labels`), for the mistakes below."""


def _relabelled(**boxes):
    """The diagram's labels with some boxes changed: `_relabelled(b3="cross-attention")`."""
    return {**DIAGRAM, **{int(name[1:]): label for name, label in boxes.items()}}


MISTAKES = {
    "sinusoidal_positional_encoding": [
        Mistake("i_over_d", "the exponent is i/d instead of 2i/d",
                "the pair (2i, 2i+1) uses the wavelength 10000**(2i/d_model): with torch.arange(0, d_model, 2) "
                "as 2i, divide by d_model, do not halve it", _pe_mistake("i_over_d")),
        Mistake("column_exponent", "each column uses its own index in the exponent",
                "sin and cos of a pair share one frequency: column 2i+1 uses 10000**(2i/d_model), like column 2i",
                _pe_mistake("column_exponent")),
        Mistake("sin_cos_swapped", "sin and cos are swapped",
                "even columns (0, 2, 4, ...) hold sin, odd columns hold cos", _pe_mistake("swapped")),
        Mistake("concatenated_halves", "the sines and cosines are concatenated instead of interleaved",
                "write sin to pe[:, 0::2] and cos to pe[:, 1::2] rather than torch.cat([sin, cos], -1)",
                _pe_mistake("halves")),
        Mistake("positions_from_one", "positions start at 1",
                "the first position is 0: torch.arange(max_len), whose row 0 is sin 0 = 0, cos 0 = 1",
                _pe_mistake("from_one")),
        Mistake("float64", "the encoding is float64",
                "return a float32 tensor (compute in float64 if you like, then .float())", _pe_mistake("float64")),
        Mistake("no_value_error", "an odd d_model is not refused",
                "check d_model % 2 first and raise ValueError: sin/cos pairs need an even width",
                _pe_mistake("no_check_crash")),
        Mistake("odd_width_truncated", "an odd d_model is not refused",
                "check d_model % 2 first and raise ValueError: sin/cos pairs need an even width",
                _pe_mistake("no_check_truncate")),
    ],
    "layer_norm": [
        Mistake("unbiased_variance", "the variance is the unbiased one (divided by D-1)",
                "layer norm divides by D: x.var(dim=-1, unbiased=False, keepdim=True), or "
                "((x - mean)**2).mean(-1, keepdim=True); torch.var is unbiased by default", _ln_mistake("unbiased")),
        Mistake("eps_outside_sqrt", "eps is added outside the square root",
                "divide by torch.sqrt(var + eps), not by std + eps", _ln_mistake("eps_outside")),
        Mistake("no_eps", "eps is not used", "divide by torch.sqrt(var + eps): eps keeps constant rows finite",
                _ln_mistake("no_eps")),
        Mistake("batch_axis", "the statistics are taken over the batch axis (that is batch norm)",
                "layer norm normalises each position over its features: mean and var over dim=-1",
                _ln_mistake("batch_axis")),
        Mistake("dim_1", "the statistics are taken over dim=1",
                "use dim=-1 with keepdim=True: dim=1 is the feature axis only for 2-D inputs", _ln_mistake("dim1")),
        Mistake("whole_tensor", "the statistics are taken over the whole tensor",
                "normalise over the last axis only: x.mean(dim=-1, keepdim=True)", _ln_mistake("all_axes")),
        Mistake("one_pass_variance", "the variance is computed as E[x^2] - E[x]^2",
                "that formula cancels catastrophically when the mean is large; use ((x - mean)**2).mean(-1)",
                _ln_mistake("one_pass")),
        Mistake("no_affine", "gamma and beta are not applied", "return gamma * x_hat + beta",
                _ln_mistake("no_affine")),
    ],
    "PositionwiseFeedForward": [
        Mistake("no_relu", "the ReLU is missing",
                "apply torch.relu between the two linear layers: linear2(dropout(relu(linear1(x))))",
                feed_forward(activation="none")),
        Mistake("relu_on_output", "a ReLU is applied to the output as well",
                "only the hidden layer has a ReLU; the output of linear2 can be negative",
                feed_forward(relu_out=True)),
        Mistake("gelu", "GELU is used instead of ReLU",
                "the paper's feed-forward uses ReLU (max(0, x)); GELU came later (BERT, GPT)",
                feed_forward(activation="gelu")),
        Mistake("relu_after_second_linear", "the ReLU is applied after the second linear layer, not between the two",
                "rectify the hidden layer: linear2(dropout(relu(linear1(x)))); the output of linear2 is not "
                "rectified (it may be negative)", feed_forward(activation="none", relu_out=True)),
    ],
    "EncoderLayer": [
        Mistake("pre_norm", "the layer is pre-norm (x + sublayer(norm(x)))",
                "the paper's layer is post-norm: x = norm1(x + dropout(self_attn(x, x, x, mask)[0])), then "
                "x = norm2(x + dropout(feed_forward(x)))", encoder_layer(mode="pre")),
        Mistake("no_residual", "the residual connections are missing",
                "add the sublayer's input back before the norm: norm(x + dropout(sublayer(x)))",
                encoder_layer(mode="no_residual")),
        Mistake("norm_inside_residual", "the norm is applied to the sublayer's output only",
                "normalise the sum: norm(x + dropout(sublayer(x))), not x + norm(sublayer(x))",
                encoder_layer(mode="norm_inside")),
        Mistake("no_feed_forward", "the feed-forward sublayer is missing",
                "after the attention sublayer, apply x = norm2(x + dropout(feed_forward(x)))",
                encoder_layer(feed_forward=False)),
        Mistake("shared_norm", "the same LayerNorm is used for both sublayers",
                "each sublayer has its own norm: norm1 after attention, norm2 after the feed-forward",
                encoder_layer(shared_norm=True)),
        Mistake("mask_ignored", "src_mask is not passed to the self-attention",
                "call self.self_attn(x, x, x, src_mask) so that no position attends to padding",
                encoder_layer(use_mask=False)),
        Mistake("causal_mask_in_encoder", "a causal mask is used in the encoder",
                "the encoder sees the whole source: use src_mask only; causal masks belong to the decoder",
                encoder_layer(causal=True)),
    ],
    "DecoderLayer": [
        Mistake("causal_mask_on_cross_attention", "the causal mask (tgt_mask) is applied to the cross-attention",
                "cross-attention may look at every real source position: pass src_mask to cross_attn and "
                "tgt_mask to self_attn", decoder_layer(cross_mask="tgt")),
        Mistake("cross_attention_swapped",
                "in the cross-attention, the query and the keys/values are swapped (cross_attn(memory, x, x, ...))",
                "queries come from the decoder, keys and values from the encoder: cross_attn(x, memory, memory, "
                "src_mask); with the source as queries the output has the source's length, so it fails whenever "
                "the lengths differ", decoder_layer(cross="memory_x")),
        Mistake("masks_swapped", "src_mask and tgt_mask are swapped",
                "self-attention uses tgt_mask (causal), cross-attention uses src_mask (source padding)",
                decoder_layer(self_mask="src", cross_mask="tgt")),
        Mistake("self_attention_unmasked", "the self-attention has no mask",
                "pass tgt_mask to self_attn, or each position sees the tokens after it",
                decoder_layer(self_mask=None)),
        Mistake("cross_attention_unmasked", "the cross-attention has no mask",
                "pass src_mask to cross_attn, so that no position reads the source's padding",
                decoder_layer(cross_mask=None)),
        Mistake("pre_norm", "the layer is pre-norm (x + sublayer(norm(x)))",
                "the paper's layer is post-norm: x = norm(x + dropout(sublayer(x))) for each of the three",
                decoder_layer(mode="pre")),
        Mistake("no_residual", "the residual connections are missing",
                "add the sublayer's input back before the norm: norm(x + dropout(sublayer(x)))",
                decoder_layer(mode="no_residual")),
        Mistake("no_feed_forward", "the feed-forward sublayer is missing",
                "after the cross-attention, apply x = norm3(x + dropout(feed_forward(x)))",
                decoder_layer(feed_forward=False)),
        Mistake("shared_norm", "the same LayerNorm is used for every sublayer",
                "each sublayer has its own norm: norm1, norm2, norm3", decoder_layer(shared_norm=True)),
    ],
    "Transformer": [
        Mistake("unscaled_embeddings", "the embeddings are not multiplied by sqrt(d_model)",
                "x = embed(tokens) * math.sqrt(self.d_model) + positional_encoding[:L]", transformer(scale="none")),
        Mistake("scaled_by_d_model", "the embeddings are multiplied by d_model, not sqrt(d_model)",
                "multiply by math.sqrt(self.d_model)", transformer(scale="d")),
        Mistake("scaled_after_adding_encoding", "the positional encoding is scaled together with the embeddings",
                "scale the embeddings first, then add the encoding: embed(t) * sqrt(d_model) + pe[:L]",
                transformer(scale="after_pe")),
        Mistake("no_positional_encoding", "the positional encoding is missing",
                "add self.positional_encoding[:L] (L = sequence length) to the scaled embeddings in encode and "
                "decode; without it the model cannot tell positions apart", transformer(pe="none")),
        Mistake("no_positional_encoding_in_decoder", "the decoder's input has no positional encoding",
                "add self.positional_encoding[:T] to the scaled target embeddings too", transformer(pe="src_only")),
        Mistake("target_embedded_with_src_embed", "the target tokens are embedded with src_embed",
                "decode uses self.tgt_embed", transformer(tgt_embedding="src")),
        Mistake("causal_mask_in_encoder", "a causal mask is used in the encoder",
                "the encoder sees the whole source: pass src_mask to the encoder layers unchanged",
                transformer(encoder_causal=True)),
        Mistake("encoder_layers_not_chained", "every encoder layer reads the embeddings",
                "feed each layer the previous layer's output: for layer in self.encoder_layers: x = layer(x, src_mask)",
                transformer(chain=False)),
        Mistake("causal_mask_on_cross_attention", "tgt_mask is passed where src_mask belongs",
                "decoder layers take layer(x, memory, src_mask, tgt_mask): source mask first",
                transformer(cross_mask="tgt")),
        Mistake("decoder_unmasked", "the decoder layers get no tgt_mask",
                "pass tgt_mask to every decoder layer, or each position sees the tokens after it",
                transformer(decoder_self_mask=False)),
        Mistake("softmax_output", "forward returns probabilities",
                "return the generator's logits; the softmax belongs to the loss (or to decoding)",
                transformer(softmax_out=True)),
    ],
    "transformer_parameter_count": [
        Mistake("no_biases", "the biases of the linear layers are not counted",
                "every nn.Linear(n_in, n_out) has n_in*n_out + n_out parameters", _count_mistake("no_biases")),
        Mistake("no_layer_norms", "the layer norms are not counted",
                "each nn.LayerNorm(d_model) has 2*d_model parameters: 2 per encoder layer, 3 per decoder layer",
                _count_mistake("no_norms")),
        Mistake("no_cross_attention", "the decoder's cross-attention is not counted",
                "a decoder layer has two attention blocks (self and cross) and three norms",
                _count_mistake("no_cross")),
        Mistake("no_generator", "the generator is not counted",
                "add the output projection nn.Linear(d_model, tgt_vocab_size)", _count_mistake("no_generator")),
        Mistake("shared_embeddings", "the embeddings and the generator are counted as one shared matrix",
                "this course's Transformer has separate src_embed, tgt_embed and generator weights (the paper "
                "shares them; that is part of why it says 65M)", _count_mistake("shared_embeddings")),
        Mistake("per_head_projections", "the projections are counted once per head",
                "W_q, W_k, W_v, W_o are d_model x d_model whatever the number of heads",
                _count_mistake("per_head")),
        Mistake("layers_once", "the layers are counted once, not num_layers times",
                "multiply the encoder and decoder layers' parameters by num_layers", _count_mistake("layers_once")),
        Mistake("counts_buffer", "the positional encoding is counted",
                "the positional encoding is a buffer, not a parameter: it is computed, never trained",
                _count_mistake("counts_buffer")),
    ],
    "quiz_architecture_for_task": [],
    "diagram_labels": [
        Mistake("self_and_cross_attention_swapped",
                "the encoder's self-attention and the decoder's cross-attention are swapped",
                "cross-attention is the decoder block that the encoder's output (memory) flows into: its queries "
                "come from the decoder, its keys and values from the encoder; the encoder itself only has "
                "self-attention over the source", _relabelled(b3="cross-attention", b7="self-attention")),
        Mistake("masked_self_attention_in_encoder",
                "the masked self-attention is placed in the encoder and the unmasked one in the decoder",
                "the encoder reads the whole source at once, so its self-attention has no causal mask; the decoder "
                "must not see the target tokens it is about to predict, so its first block is the masked one",
                _relabelled(b3="masked self-attention", b6="self-attention")),
        Mistake("decoder_attentions_in_wrong_order", "the decoder's two attention blocks are in the wrong order",
                "a decoder layer first attends to the target so far (masked self-attention), then to the source "
                "(cross-attention, the block the arrow from the encoder enters)",
                _relabelled(b6="cross-attention", b7="masked self-attention")),
        Mistake("softmax_before_linear", "the final linear layer and the softmax are swapped",
                "the linear layer (the generator) turns each d_model vector into one score per vocabulary entry; "
                "the softmax then turns those scores into probabilities", _relabelled(b9="softmax", b10="linear")),
        Mistake("embedding_and_encoding_swapped", "the embedding and the positional encoding are swapped",
                "token ids are looked up in the embedding table first; the positional encoding is added to the "
                "result (the (+) beside each stack)", _relabelled(b1="positional encoding", b2="embedding")),
    ],
}
