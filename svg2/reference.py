"""Float32 oracles for tests: attention as dense masked SDPA with the block map expanded to tokens.

These build S×S matrices on purpose and are meant for small S only.
"""
from __future__ import annotations

import math

import torch


def token_mask(keep: torch.Tensor, q_labels: torch.Tensor, k_labels: torch.Tensor) -> torch.Tensor:
    """(B, H, QC, KC) block keep-mask, (B, H, S) labels -> (B, H, S, S) bool token mask."""
    rows = keep.gather(2, q_labels[..., None].expand(*q_labels.shape, keep.shape[-1]))  # (B, H, S, KC)
    return rows.gather(3, k_labels[..., None, :].expand(*rows.shape[:3], k_labels.shape[-1]))


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax attention in float32 with a (B, H, S, S) bool mask; rows with nothing kept output 0."""
    qf, kf, vf = q.float(), k.float(), v.float()
    scores = qf @ kf.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return probs @ vf


def block_masked_attention(q, k, v, keep, q_labels, k_labels) -> torch.Tensor:
    """Attention in the original token order where token i sees token j iff keep[q_labels[i], k_labels[j]]."""
    return masked_attention(q, k, v, token_mask(keep, q_labels, k_labels))
