"""The transformer's pieces as families of modules and functions, each member with one deliberate deviation.

Instructor only, like the rest of autograder/hidden/: never shipped to students. It is the one place the
mistake implementations of Days 8-14 are written, so that the same module is not written three times:

- Days 8-9: the MultiHeadAttention mistakes are members of `multi_head_attention(...)`;
- Days 10-12: the layer and Transformer mistakes are members of `feed_forward`, `encoder_layer`,
  `decoder_layer` and `transformer`, built on the reference `MultiHeadAttention`;
- Days 13-14: the training and decoding mistakes build their masks with `causal_mask` and `padding_mask`.

Each family called without arguments is the reference (the course's solution), so that a mistake needs
neither the student's pieces nor the notebook's. Every module keeps the constructor and the state_dict keys
the notebooks give (their weights come from the case).
"""
from __future__ import annotations

import math

import torch
from torch import nn

# ---------------------------------------------------------------- attention and masks


def attention(query, key, value, mask=None, scale_dim=None):
    """Day 6's reference scaled dot-product attention, optionally scaled by a wrong width; returns (output, weights)."""
    scores = query @ key.transpose(-2, -1) / math.sqrt(scale_dim or query.size(-1))  # (..., Lq, Lk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    return weights @ value, weights


def causal_mask(size):
    """Day 6's (size, size) causal mask: True where query i may attend to key j <= i."""
    return torch.tril(torch.ones(size, size, dtype=torch.bool))


def padding_mask(tokens, pad_id):
    """Day 6's (B, 1, L) padding mask: True where the key is a real token."""
    return (tokens != pad_id).unsqueeze(1)


# ---------------------------------------------------------------- multi-head attention (Days 8-9)


class GivenMHA(nn.Module):
    """The MultiHeadAttention __init__ the Day 8 notebook gives (its forward is the exercise)."""

    def __init__(self, d_model, num_heads, dropout=0.0, bias=True):
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.d_model, self.num_heads, self.d_k = d_model, num_heads, d_model // num_heads
        self.W_q = nn.Linear(d_model, d_model, bias=bias)
        self.W_k = nn.Linear(d_model, d_model, bias=bias)
        self.W_v = nn.Linear(d_model, d_model, bias=bias)
        self.W_o = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)


def multi_head_attention(split="ok", merge="ok", project=True, scale="d_k", mask_mode="head_axis",
                         values_from="value", key_length="key", returned="weights", dropout=True):
    """A MultiHeadAttention class with the given deviation (the defaults: the reference)."""

    class MultiHeadAttention(GivenMHA):
        def forward(self, query, key, value, mask=None):
            B, Lq, D = query.shape
            Lk = Lq if key_length == "query" else key.size(1)
            h, d_k = self.num_heads, self.d_k

            def heads(x, L):
                if split == "view":
                    return x.view(B, h, L, d_k)
                return x.view(B, L, h, d_k).transpose(1, 2)  # (B, h, L, d_k)

            q = heads(self.W_q(query), Lq)
            k = heads(self.W_k(key), Lk)
            v = heads(self.W_v(key if values_from == "key" else value), Lk)
            if mask is not None:
                if mask_mode == "ignored":
                    mask = None
                elif mask_mode == "always" or (mask_mode == "head_axis" and mask.dim() == 3):
                    mask = mask.unsqueeze(1)
            _, weights = attention(q, k, v, mask, D if scale == "d_model" else None)
            dropped = self.dropout(weights) if dropout else weights
            context = dropped @ v  # (B, h, Lq, d_k)
            if merge == "view":
                merged = context.reshape(B, Lq, D)
            else:
                merged = context.transpose(1, 2).contiguous().view(B, Lq, D)
            output = self.W_o(merged) if project else merged
            if returned == "dropped":
                return output, dropped
            if returned == "mean":
                return output, weights.mean(dim=1)
            return output, weights

    return MultiHeadAttention


MultiHeadAttention = multi_head_attention()
"""The reference MultiHeadAttention, which the later days' layers are built on."""

# ---------------------------------------------------------------- layers and the Transformer (Days 10-12)


def feed_forward(activation="relu", relu_out=False):
    """A PositionwiseFeedForward class with the given activation, and a ReLU on its output or not."""

    class PositionwiseFeedForward(nn.Module):
        def __init__(self, d_model, d_ff, dropout=0.1):
            super().__init__()
            self.linear1 = nn.Linear(d_model, d_ff)
            self.linear2 = nn.Linear(d_ff, d_model)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x):
            h = self.linear1(x)
            h = {"relu": torch.relu, "gelu": nn.functional.gelu, "none": lambda t: t}[activation](h)
            y = self.linear2(self.dropout(h))
            return torch.relu(y) if relu_out else y

    return PositionwiseFeedForward


PositionwiseFeedForward = feed_forward()
"""The reference feed-forward block."""


def sublayer(layer, x, norm, fn, mode):
    """One residual sublayer of `layer`, the paper's way (post) or with one deliberate deviation."""
    if mode == "pre":
        return x + layer.dropout(fn(norm(x)))
    if mode == "no_residual":
        return norm(layer.dropout(fn(x)))
    if mode == "norm_inside":
        return x + norm(layer.dropout(fn(x)))
    return norm(x + layer.dropout(fn(x)))


def encoder_layer(mode="post", feed_forward=True, shared_norm=False, use_mask=True, causal=False):
    """An EncoderLayer class with the given deviation (the defaults: the reference)."""

    class EncoderLayer(nn.Module):
        def __init__(self, d_model, num_heads, d_ff, dropout=0.1):
            super().__init__()
            self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
            self.feed_forward = PositionwiseFeedForward(d_model, d_ff, dropout)
            self.norm1 = nn.LayerNorm(d_model)
            self.norm2 = nn.LayerNorm(d_model)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x, src_mask=None):
            mask = src_mask if use_mask else None
            if causal:
                future = causal_mask(x.size(1))
                mask = future if mask is None else mask & future  # (B, L, L)
            x = sublayer(self, x, self.norm1, lambda h: self.self_attn(h, h, h, mask)[0], mode)
            if feed_forward:
                x = sublayer(self, x, self.norm1 if shared_norm else self.norm2, self.feed_forward, mode)
            return x

    return EncoderLayer


def decoder_layer(mode="post", feed_forward=True, shared_norm=False, self_mask="tgt", cross="x_memory",
                  cross_mask="src"):
    """A DecoderLayer class with the given deviation (the defaults: the reference)."""

    class DecoderLayer(nn.Module):
        def __init__(self, d_model, num_heads, d_ff, dropout=0.1):
            super().__init__()
            self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
            self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout)
            self.feed_forward = PositionwiseFeedForward(d_model, d_ff, dropout)
            self.norm1 = nn.LayerNorm(d_model)
            self.norm2 = nn.LayerNorm(d_model)
            self.norm3 = nn.LayerNorm(d_model)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x, memory, src_mask=None, tgt_mask=None):
            masks = {"src": src_mask, "tgt": tgt_mask, None: None}
            m_self, m_cross = masks[self_mask], masks[cross_mask]
            norm2 = self.norm1 if shared_norm else self.norm2
            norm3 = self.norm1 if shared_norm else self.norm3
            x = sublayer(self, x, self.norm1, lambda h: self.self_attn(h, h, h, m_self)[0], mode)

            def cross_attention(h):
                if cross == "memory_x":  # queries from the encoder, keys and values from the decoder
                    return self.cross_attn(memory, h, h, m_cross)[0]
                return self.cross_attn(h, memory, memory, m_cross)[0]

            x = sublayer(self, x, norm2, cross_attention, mode)
            if feed_forward:
                x = sublayer(self, x, norm3, self.feed_forward, mode)
            return x

    return DecoderLayer


EncoderLayer, DecoderLayer = encoder_layer(), decoder_layer()
"""The reference layers, which the Transformer mistakes are built on."""


def positional_encoding(max_len, d_model):
    """The reference sinusoidal positional encoding (max_len, d_model), float32."""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]
    angle = pos / 10000 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (L, d/2)
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe.float()


def transformer(scale="sqrt", pe="both", tgt_embedding="tgt", encoder_causal=False, decoder_self_mask=True,
                cross_mask="src", softmax_out=False, chain=True):
    """A Transformer class with the given deviation (the defaults: the reference)."""

    class Transformer(nn.Module):
        def __init__(self, src_vocab_size, tgt_vocab_size, d_model=512, num_heads=8, num_layers=6, d_ff=2048,
                     dropout=0.1, max_len=5000):
            super().__init__()
            self.d_model = d_model
            self.src_embed = nn.Embedding(src_vocab_size, d_model)
            self.tgt_embed = nn.Embedding(tgt_vocab_size, d_model)
            self.register_buffer("positional_encoding", positional_encoding(max_len, d_model), persistent=False)
            self.encoder_layers = nn.ModuleList(
                EncoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
            self.decoder_layers = nn.ModuleList(
                DecoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
            self.generator = nn.Linear(d_model, tgt_vocab_size)
            self.dropout = nn.Dropout(dropout)

        def _embed(self, embedding, tokens, with_pe):
            e = embedding(tokens)  # (B, L, D)
            p = self.positional_encoding[: tokens.size(1)] if with_pe else 0.0
            if scale == "after_pe":
                return self.dropout((e + p) * math.sqrt(self.d_model))
            factor = {"sqrt": math.sqrt(self.d_model), "none": 1.0, "d": float(self.d_model)}[scale]
            return self.dropout(e * factor + p)

        def encode(self, src, src_mask):
            x = self._embed(self.src_embed, src, pe in ("both", "src_only"))
            mask = src_mask
            if encoder_causal:
                mask = src_mask & causal_mask(src.size(1))
            h = x
            for layer in self.encoder_layers:
                h = layer(h if chain else x, mask)
            return h

        def decode(self, tgt, memory, src_mask, tgt_mask):
            embedding = self.tgt_embed if tgt_embedding == "tgt" else self.src_embed
            x = self._embed(embedding, tgt, pe == "both")
            cross = {"src": src_mask, "tgt": tgt_mask}[cross_mask]
            for layer in self.decoder_layers:
                x = layer(x, memory, cross, tgt_mask if decoder_self_mask else None)
            return x

        def forward(self, src, tgt, src_mask, tgt_mask):
            logits = self.generator(self.decode(tgt, self.encode(src, src_mask), src_mask, tgt_mask))
            return logits.softmax(-1) if softmax_out else logits

    return Transformer
