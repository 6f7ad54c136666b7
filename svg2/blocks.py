"""Block selection: which (query cluster, key cluster) blocks a query attends.

Scores are centroid dot products ``Cq·Ckᵀ/√D``. Per query cluster, a softmax over key clusters
weighted by key-cluster size estimates how much attention mass each key cluster takes; the budget
keeps, heaviest first, every key cluster whose preceding mass is at most ``top_p`` (the smallest set
reaching it, plus the one that crosses it: the reference implementation's rule), or the ``top_k``
heaviest, never fewer than ``int(min_kc_ratio·KC)`` (floored, as the reference does). Ties in mass go to
the lower cluster index.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from svg2.checks import check_fraction
from svg2.kmeans import cluster_sums


@dataclass
class BlockMap:
    keep: torch.Tensor       # (B, H, QC, KC) bool
    row_sizes: torch.Tensor  # (B, H, QC) int64 query tokens per query cluster
    col_sizes: torch.Tensor  # (B, H, KC) int64 key tokens per key cluster

    def __post_init__(self):
        b, h, qc, kc = self.keep.shape
        if self.keep.dtype != torch.bool:
            raise TypeError(f"keep has dtype {self.keep.dtype}; expected torch.bool")
        if tuple(self.row_sizes.shape) != (b, h, qc) or tuple(self.col_sizes.shape) != (b, h, kc):
            raise ValueError(
                f"row_sizes {tuple(self.row_sizes.shape)} / col_sizes {tuple(self.col_sizes.shape)} do not "
                f"match keep {tuple(self.keep.shape)}; expected {(b, h, qc)} and {(b, h, kc)}"
            )

    def kept_pairs(self) -> torch.Tensor:
        """Query-key token pairs attended, per (B, H): (B, H) int64."""
        return torch.einsum("bhq,bhqk,bhk->bh", self.row_sizes.double(), self.keep.double(),
                            self.col_sizes.double()).round().long()

    def density(self) -> torch.Tensor:
        """Exact token-level fraction of the S_q×S_k attention pairs kept, per (B, H): (B, H) float64."""
        total = self.row_sizes.sum(-1).double() * self.col_sizes.sum(-1).double()
        return self.kept_pairs().double() / total


def segment_means(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the tokens with each label: (N, S, D), (N, S) -> (N, K, D) float32; empty labels give 0."""
    sums, counts = cluster_sums(x, labels, k)
    return sums / counts.clamp_min(1)[..., None]


def centroid_scores(cq: torch.Tensor, ck: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, QC, D), (N, KC, D) -> (N, QC, KC) float32 scores Cq·Ckᵀ/√D, the product taken in ``dtype``."""
    return torch.bmm(cq.to(dtype), ck.to(dtype).transpose(1, 2)).float() / math.sqrt(cq.shape[-1])


def cluster_mass(scores: torch.Tensor, col_sizes: torch.Tensor) -> torch.Tensor:
    """Size-weighted softmax over key clusters: (N, QC, KC), (N, KC) -> (N, QC, KC); empty clusters get 0."""
    log_w = torch.log(col_sizes.float())[:, None, :]  # -inf for empty clusters
    return torch.softmax(scores + log_w, dim=-1)


def select_blocks(
    scores: torch.Tensor,
    col_sizes: torch.Tensor,
    *,
    top_p: float | None = 0.9,
    top_k: int | None = None,
    min_kc_ratio: float = 0.0,
) -> torch.Tensor:
    """Keep-mask (N, QC, KC) bool from scores (N, QC, KC) and key-cluster sizes (N, KC).

    Exactly one of ``top_p`` (mass budget) and ``top_k`` (count budget) is used. ``top_p = 1`` keeps
    every non-empty key cluster (rounding in the cumulative sum must not drop a tiny one).
    """
    return select_by_mass(cluster_mass(scores, col_sizes), col_sizes, top_p=top_p, top_k=top_k,
                          min_kc_ratio=min_kc_ratio)


def select_by_mass(
    mass: torch.Tensor,
    col_sizes: torch.Tensor,
    *,
    top_p: float | None = 0.9,
    top_k: int | None = None,
    min_kc_ratio: float = 0.0,
) -> torch.Tensor:
    """``select_blocks`` on the estimated mass (N, QC, KC) of ``cluster_mass``."""
    if (top_p is None) == (top_k is None):
        raise ValueError(f"top_p={top_p!r}, top_k={top_k!r}; expected exactly one budget")
    kc = mass.shape[-1]
    check_fraction("min_kc_ratio", min_kc_ratio, allow_zero=True)
    min_keep = int(min_kc_ratio * kc)
    if top_p is not None:
        check_fraction("top_p", top_p)
        if top_p >= 1.0:
            return (col_sizes > 0)[:, None, :].expand_as(mass).clone() | heaviest(mass, min_keep)
        sorted_mass, order = torch.sort(mass, dim=-1, descending=True, stable=True)
        before = torch.cumsum(sorted_mass, dim=-1) - sorted_mass  # mass strictly before each rank
        rank = torch.arange(kc, device=mass.device)
        keep_sorted = (before <= top_p) | (rank < min_keep)  # rank 0 has nothing before it: always kept
        return torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= kc:
        raise ValueError(f"top_k={top_k!r}; expected an integer in [1, KC={kc}]")
    return heaviest(mass, max(top_k, min_keep))


def key_cluster_layout(mass: torch.Tensor) -> torch.Tensor:
    """Order (N, KC) in which to lay key clusters out, from the mass (N, QC, KC) of ``cluster_mass``.

    Each key cluster goes next to the others that weigh most in the same query cluster (its "home"), the
    heaviest first, so the key clusters one query cluster keeps tend to be adjacent and the sparse kernel
    reads them as fewer, longer runs of rows (``svg2.kernels.varblock.run_lengths``). Any order gives the
    same attention; this one only changes how the kept rows are chunked.
    """
    peak, home = mass.max(dim=1)  # (N, KC)
    return torch.sort(home.double() * 2 + (1 - peak.double()), dim=-1, stable=True).indices


def heaviest(mass: torch.Tensor, count: int) -> torch.Tensor:
    """Mask of the ``count`` heaviest entries of each row of the last dimension (ties to the lower index)."""
    keep = torch.zeros_like(mass, dtype=torch.bool)
    if count > 0:
        order = torch.sort(mass, dim=-1, descending=True, stable=True).indices[..., :count]
        keep.scatter_(-1, order, True)
    return keep
