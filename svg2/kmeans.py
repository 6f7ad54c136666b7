"""Batched k-means over (N, S, D) sequences (N = B*H): squared Euclidean distance, Lloyd iterations.

A fixed iteration count and no data-dependent control flow, so nothing synchronises with the device
(the CUDA-graph path relies on that). Empty clusters keep their previous centroid. The torch code here
is the CPU execution path and the oracle for the Triton kernels in ``svg2/kernels``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from svg2.checks import check_clusters, check_int, kernel_covers
from svg2.permute import narrow_labels

# Elements of the (rows, K) distance block computed at once; bounds the torch path's memory.
_DIST_CHUNK = 1 << 24


@dataclass
class KMeansResult:
    labels: torch.Tensor     # (N, S) int64 cluster of each token
    centroids: torch.Tensor  # (N, K, D) float32
    sizes: torch.Tensor      # (N, K) int64 tokens per cluster
    iters: int               # Lloyd iterations run


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor, is_open: torch.Tensor | None = None,
                     labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Nearest centroid of every token, x (N, R, D), centroids (N, K, D): (N, R) int64 index, and with
    ``is_open`` (N, K) bool + ``labels`` (N, R) the nearest *open* centroid and the cost of moving there,
    ``d(x, c_open) - d(x, c_own)`` (N, R) float32 (inf where none is open); else cost is None.

    ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2 and ||x||^2 moves neither the argmin nor the cost, so only
    ||c||^2 - 2 x.c is formed, in row chunks so an (R, K) matrix is never held whole. CUDA tensors go to the
    Triton pass of ``svg2.kernels.kmeans`` (one kernel for both modes; its dot runs in x's dtype).
    """
    move = is_open is not None
    if kernel_covers(x):
        from svg2.kernels.kmeans import assign_nearest, move_costs

        if move:
            cost, index = move_costs(x, labels, centroids, is_open)
            return index, cost
        return assign_nearest(x, centroids), None
    n, r, d = x.shape
    k = centroids.shape[1]
    c = centroids.float()
    c_sq = (c * c).sum(-1)  # (N, K)
    bias = (c_sq.masked_fill(~is_open, float("inf")) if move else c_sq)[:, None, :]  # closed: never nearest
    index = torch.empty(n, r, dtype=torch.long, device=x.device)
    cost = torch.empty(n, r, dtype=torch.float32, device=x.device) if move else None
    rows = max(1, _DIST_CHUNK // max(1, n * k))
    for start in range(0, r, rows):
        xs = x[:, start:start + rows].float()
        near = torch.baddbmm(bias, xs, c.transpose(1, 2), alpha=-2.0).min(-1)  # over (N, rows, K)
        index[:, start:start + rows] = near.indices
        if move:
            lab = labels[:, start:start + rows]
            own = c_sq.gather(1, lab) - 2 * (xs * c.gather(1, lab[..., None].expand(*lab.shape, d))).sum(-1)
            cost[:, start:start + rows] = near.values - own
    return index, cost


def kmeans_assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest centroid of every token: (N, S, D), (N, K, D) -> (N, S) int64."""
    return nearest_centroid(x, centroids)[0]


def cluster_sums(x: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums (N, K, D) float32 and counts (N, K) int64 of the tokens in each cluster."""
    n, s, d = x.shape
    sums = torch.zeros(n, k, d, dtype=torch.float32, device=x.device)
    sums.scatter_add_(1, labels[..., None].expand(n, s, d), x.float())
    counts = torch.zeros(n, k, dtype=torch.long, device=x.device)
    counts.scatter_add_(1, labels, torch.ones_like(labels))
    return sums, counts


def kmeans_update(x: torch.Tensor, labels: torch.Tensor, prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of the assigned tokens; empty clusters keep ``prev``. Returns (centroids, sizes)."""
    if kernel_covers(x):
        from svg2.kernels.kmeans import cluster_means

        order = torch.sort(narrow_labels(labels, prev.shape[1]), dim=1).indices  # (N, S) tokens grouped by label
        return cluster_means(x, labels, prev, order)
    sums, counts = cluster_sums(x, labels, prev.shape[1])
    means = sums / counts.clamp_min(1)[..., None]
    return torch.where(counts[..., None] > 0, means, prev.float()), counts


def init_centroids(x: torch.Tensor, k: int, method: str = "random", seed: int = 0,
                   rows: tuple[torch.Tensor, int] | None = None) -> torch.Tensor:
    """Seeded initial centroids (N, K, D) float32: K distinct tokens per sequence, or k-means++.

    ``rows``: (index (N,) int64, total) when x's sequences are those rows of a batch of ``total`` (a rank's heads
    under sequence parallelism): each sequence gets the draw it gets in the whole batch."""
    n, s, d = x.shape
    gen = torch.Generator(device=x.device).manual_seed(seed)
    if method == "random":
        draw = torch.rand(n if rows is None else rows[1], s, generator=gen, device=x.device)
        draw = draw if rows is None else draw[rows[0]]
        idx = draw.topk(k, dim=1).indices  # (N, K) distinct
        return x.gather(1, idx[..., None].expand(n, k, d)).float()
    if method == "kmeans++":
        if rows is not None:  # its draws depend on every sequence of the batch, so a part cannot replay them
            raise ValueError("kmeans_init='kmeans++' cannot start a part of the batch (heads split over ranks) as "
                             "the whole batch starts; expected kmeans_init='random' with sequence parallelism")
        return _kmeans_plus_plus(x.float(), k, gen)
    raise ValueError(f"init={method!r}; expected 'random' or 'kmeans++'")


def _kmeans_plus_plus(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    # D^2 sampling: each next centre is drawn with probability proportional to its squared distance
    # to the nearest centre chosen so far. K sequential steps, all on the device.
    n, s, d = x.shape
    ar = torch.arange(n, device=x.device)
    first = torch.randint(0, s, (n,), generator=gen, device=x.device)
    centres = torch.empty(n, k, d, dtype=x.dtype, device=x.device)
    centres[:, 0] = x[ar, first]
    best = ((x - centres[:, :1]) ** 2).sum(-1)  # (N, S)
    for j in range(1, k):
        # Tokens already chosen have distance 0; the epsilon keeps duplicate-only data samplable.
        pick = torch.multinomial(best + 1e-12, 1, generator=gen).squeeze(1)
        centres[:, j] = x[ar, pick]
        best = torch.minimum(best, ((x - centres[:, j:j + 1]) ** 2).sum(-1))
    return centres


def kmeans(
    x: torch.Tensor,
    k: int,
    iters: int,
    *,
    init: str = "random",
    seed: int = 0,
    centroids: torch.Tensor | None = None,
    centroid_dtype: torch.dtype | None = None,
    rows: tuple[torch.Tensor, int] | None = None,
) -> KMeansResult:
    """Run ``iters`` Lloyd iterations on (N, S, D) from seeded init or warm-start ``centroids`` (N, K, D).

    Each iteration assigns every token to its nearest centroid, then moves each centroid to the
    mean of its tokens; the result holds the last assignment and the means of exactly those labels
    (empty clusters keep their previous centroid). ``iters=0`` only assigns. ``centroid_dtype``: centroids are
    rounded to it after every update (the reference keeps them in the inputs' bf16); they stay float32 tensors.
    ``rows``: see ``init_centroids``.
    """
    if x.dim() != 3:
        raise ValueError(f"x has {x.dim()} dims (shape {tuple(x.shape)}); expected (N, S, D)")
    n, s, d = x.shape
    check_clusters("k", k, s)
    check_int("iters", iters)
    if centroids is None:
        c = init_centroids(x, k, init, seed, rows)
    else:
        if tuple(centroids.shape) != (n, k, d):
            raise ValueError(f"centroids have shape {tuple(centroids.shape)}; expected {(n, k, d)}")
        c = centroids.float()
    if iters == 0:
        labels = kmeans_assign(x, c)
        sizes = torch.zeros(n, k, dtype=torch.long, device=x.device).scatter_add_(1, labels, torch.ones_like(labels))
        return KMeansResult(labels=labels, centroids=c, sizes=sizes, iters=0)
    for _ in range(iters):
        labels = kmeans_assign(x, c)
        c, sizes = kmeans_update(x, labels, c)
        if centroid_dtype is not None:
            c = c.to(centroid_dtype).float()
    return KMeansResult(labels=labels, centroids=c, sizes=sizes, iters=iters)


def inertia(x: torch.Tensor, result: KMeansResult) -> torch.Tensor:
    """Sum of squared distances of each token to its centroid, per sequence: (N,)."""
    c = result.centroids.gather(1, result.labels[..., None].expand(*result.labels.shape, x.shape[-1]))
    return ((x.float() - c) ** 2).sum((-1, -2))
