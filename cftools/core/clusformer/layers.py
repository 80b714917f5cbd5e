"""The computations of a transformer layer's blocks written out on nn.MultiheadAttention's
and nn.Transformer*Layer's own weights, shared by Clusformer's training forward and its
inference path: nn's own forward converts masks, copies tensors between layouts and
draws the attention's dropout one random number an element, which at width 128 costs
more than the matmuls (bench/results/code-choices.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import cheap_dropout


def attention(attn: nn.MultiheadAttention, x: torch.Tensor, memory, keep,
              dropout: float = 0.0) -> torch.Tensor:
    """nn.MultiheadAttention (packed in-projection, batch first) without its conversions:
    self-attention when ``memory`` is None; ``keep`` (B, 1, 1, Lk) bool or None;
    ``dropout``: the probability of dropping an attention weight (training)."""
    if memory is None:
        q, k, v = self_projections(attn, x)
    else:
        B, Lq, W = x.shape
        H = attn.num_heads
        w, b = attn.in_proj_weight, attn.in_proj_bias
        q = F.linear(x, w[:W], b[:W]).view(B, Lq, H, W // H).transpose(1, 2)
        k, v = F.linear(memory, w[W:], b[W:]).view(memory.shape[0], memory.shape[1], 2, H,
                                                   W // H).permute(2, 0, 3, 1, 4)
        if q.shape[0] != k.shape[0]:
            q = q.expand(k.shape[0], -1, -1, -1)
    if q.device.type == "cpu" and (q.dtype == torch.bfloat16 or dropout > 0.0):
        out = attention_bmm(q, k, v, keep, dropout)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout)
    return output_projection(attn, out)


def self_projections(attn: nn.MultiheadAttention, x: torch.Tensor):
    """(q, k, v), each (B, H, L, dh), of self-attention over ``x`` (B, L, W): one packed
    in-projection."""
    B, L, W = x.shape
    H = attn.num_heads
    return F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(B, L, 3, H, W // H) \
        .permute(2, 0, 3, 1, 4)


def output_projection(attn: nn.MultiheadAttention, out: torch.Tensor) -> torch.Tensor:
    """The heads' outputs (B, H, L, dh) merged and projected: (B, L, W)."""
    B, H, L, dh = out.shape
    return F.linear(out.transpose(1, 2).reshape(B, L, H * dh), attn.out_proj.weight,
                    attn.out_proj.bias)


def attention_weights(q, k, keep) -> torch.Tensor:
    """softmax(q k^T / sqrt(dh) + mask) as (B * H, Lq, Lk), from q (B, H, Lq, dh) and k
    (B, H, Lk, dh); ``keep`` as attention()'s."""
    B, H, Lq, dh = q.shape
    Lk = k.shape[2]
    q = q.reshape(B * H, Lq, dh)
    kt = k.reshape(B * H, Lk, dh).transpose(1, 2)
    scale = dh ** -0.5
    if keep is None:  # beta=0: the (empty) input is ignored, the scale rides in the GEMM
        scores = torch.baddbmm(q.new_empty(()).expand(B * H, Lq, Lk), q, kt, beta=0.0,
                               alpha=scale)
    else:
        bias = torch.zeros(keep.shape, dtype=q.dtype, device=q.device).masked_fill_(
            ~keep, float("-inf"))  # (B, 1, 1, Lk)
        bias = bias.expand(B, H, 1, Lk).reshape(B * H, 1, Lk).expand(B * H, Lq, Lk)
        scores = torch.baddbmm(bias, q, kt, alpha=scale)
    return torch.softmax(scores, dim=-1)


def attention_bmm(q, k, v, keep, dropout: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(dh) + mask) v as two batched matmuls: for bf16 on CPU, with
    short sequences and small heads (64 x 32 at the small preset), faster than the flash
    kernel of scaled_dot_product_attention (bench/results/code-choices.md); and for any
    precision on CPU when the weights are dropped (training), where that function falls
    back to its math path and draws one random number a weight. ``dropout`` drops
    attention weights with dropout.py's cheap masks. (B, H, L, dh) in and out."""
    B, H, Lq, dh = q.shape
    weights = attention_weights(q, k, keep)
    if dropout > 0.0:
        weights = cheap_dropout(weights, dropout)
    out = torch.bmm(weights, v.reshape(B * H, k.shape[2], dh))
    return out.view(B, H, Lq, dh)


def shared_self_attention(attn: nn.MultiheadAttention, x: torch.Tensor, batch: int,
                          dropout: float = 0.0) -> torch.Tensor:
    """attention(attn, x, None, None, dropout) of one sequence ``x`` (1, L, W) that
    ``batch`` sequences share (the learned decoder queries), as (batch, L, W): the
    projections and the attention weights computed once, the weights' dropout drawn for
    each sequence (the masks attention() would draw for ``x`` expanded to the batch)."""
    if dropout == 0.0:
        return attention(attn, x, None, None).expand(batch, -1, -1)
    q, k, v = self_projections(attn, x)  # (1, H, L, dh) each
    weights = attention_weights(q, k, None).unsqueeze(0).expand(batch, -1, -1, -1)
    return output_projection(attn, cheap_dropout(weights, dropout) @ v)


def feed_forward(layer, x: torch.Tensor, dropout=None) -> torch.Tensor:
    """A transformer layer's feed-forward block; ``dropout`` (a module) between its two
    linear maps, as the layer's own forward has it."""
    hidden = layer.linear1(x)
    hidden = hidden.relu_() if layer.activation is F.relu else layer.activation(hidden)
    return layer.linear2(hidden if dropout is None else dropout(hidden))
