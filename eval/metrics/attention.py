"""Attention-level error of a sparse output against the dense output of the same call."""
from __future__ import annotations

import torch


def _check(ref: torch.Tensor, out: torch.Tensor) -> None:
    if ref.shape != out.shape:
        raise ValueError(f"ref {tuple(ref.shape)} and out {tuple(out.shape)} differ; expected one (B, H, S, D)")


def relative_l2(ref: torch.Tensor, out: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| over the whole tensor, in float64."""
    _check(ref, out)
    r, o = ref.double(), out.double()
    return float(torch.linalg.vector_norm(o - r) / torch.linalg.vector_norm(r).clamp_min(1e-30))


def cosine_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """1 - cosine similarity of each token's output vector (last dim), averaged over tokens."""
    _check(ref, out)
    cos = torch.nn.functional.cosine_similarity(ref.double(), out.double(), dim=-1, eps=1e-30)
    return float(1 - cos.mean())
