"""Semantic-aware permutation: stable sort of tokens by cluster label, so every cluster is one
contiguous run whose length is the cluster size (empty clusters are 0-length runs)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Permutation:
    order: torch.Tensor    # (N, S) int64: permuted position p holds original token order[p]
    inverse: torch.Tensor  # (N, S) int64: original token t sits at permuted position inverse[t]
    sizes: torch.Tensor    # (N, K) int64 run lengths, in label order


def narrow_labels(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Labels in the narrowest integer type that holds them: a radix sort of int16 keys is 2.2x faster than
    of int64 on the H200 (0.21 vs 0.48 ms at 40 x 75,600)."""
    if num_labels <= 1 << 15:
        return labels.to(torch.int16)
    return labels.to(torch.int32) if num_labels <= 1 << 31 else labels


def permutation_from_labels(labels: torch.Tensor, num_labels: int) -> Permutation:
    """(N, S) labels in [0, num_labels) -> the stable sorting permutation, its inverse and run lengths."""
    if labels.dim() != 2:
        raise ValueError(f"labels have {labels.dim()} dims (shape {tuple(labels.shape)}); expected (N, S)")
    n, _ = labels.shape
    order = torch.sort(narrow_labels(labels, num_labels), dim=1, stable=True).indices
    sizes = torch.zeros(n, num_labels, dtype=torch.long, device=labels.device)
    sizes.scatter_add_(1, labels, torch.ones_like(labels))
    return permutation_from_order(order, sizes)


def permutation_from_order(order: torch.Tensor, sizes: torch.Tensor) -> Permutation:
    """A permutation given by its order (N, S) and run lengths (N, K); the inverse is derived."""
    n, s = order.shape
    inverse = torch.empty_like(order).scatter_(1, order, torch.arange(s, device=order.device).expand(n, s))
    return Permutation(order=order.contiguous(), inverse=inverse, sizes=sizes.reshape(n, -1))


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (N, S, D), index (N, S) -> x[n, index[n, p]] for every (n, p). CUDA: Triton row gather."""
    if x.is_cuda:
        from svg2.kernels.permute import gather_rows

        return gather_rows(x, index)
    return x.gather(1, index[..., None].expand(*index.shape, x.shape[-1]))


def permute(x: torch.Tensor, perm: Permutation) -> torch.Tensor:
    """Original order -> cluster order, on (N, S, D)."""
    return gather_tokens(x, perm.order)


def unpermute(y: torch.Tensor, perm: Permutation) -> torch.Tensor:
    """Cluster order -> original order, on (N, S, D)."""
    return gather_tokens(y, perm.inverse)
