"""Tile alignment of cluster sizes: move a few boundary tokens between clusters so that most sizes become
multiples of the kernel's query tile, at a small increase in k-means cost. Only labels change; the
centroids stay as they are.

Per sequence, a cluster of r tokens has rem = r mod multiple. The clusters with the largest rem are
receivers (they round up, taking multiple - rem tokens); the other clusters with rem > 0 are donors (they
round down, shedding rem tokens). The receiver count is the largest whose demand sum(multiple - rem) does
not exceed the donors' supply sum(rem), so every receiver can be filled; the excess supply (< multiple)
stays with the donors of largest rem. Clusters with rem 0 are neither, so empty clusters stay empty.
A donor sheds the tokens with the smallest move cost d(x, nearest receiver) - d(x, own centroid). Then,
for ``rounds`` rounds, every shed token not yet placed proposes to its nearest receiver with room left and
each receiver accepts its cheapest proposers up to its room. Shed tokens still unplaced go back to their
donor (best effort: that donor and an unfilled receiver keep a partial tile).

No cluster crosses a tile boundary: a donor ends between floor(r/m)·m and r, a receiver between r and
ceil(r/m)·m. Fixed shapes, fixed rounds, stable sorts with ties broken by token index, no host sync.
"""
from __future__ import annotations

import torch

from svg2.checks import check_int
from svg2.kmeans import nearest_centroid


def partial_tiles(sizes: torch.Tensor, multiple: int) -> torch.Tensor:
    """Padded rows per sequence, sum over clusters of ceil(r/m)·m - r: (N, K) sizes -> (N,) float64."""
    _check_multiple(multiple)
    return ((-sizes) % multiple).sum(-1).double()


def align_cluster_sizes(x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, multiple: int,
                        rounds: int = 8) -> torch.Tensor:
    """x (N, S, D) any float dtype, labels (N, S) int64 in [0, K), centroids (N, K, D) -> new labels (N, S) int64.

    Costs one distance pass over all tokens plus one over the shed slots (at most K·(multiple-1)/2 tokens)
    per round after the first (Triton on the GPU). Proposals settle in about 8 rounds: on the H200 at
    S=75,600, K=300, multiple=64, 4 rounds left 35% of the padding rows and 8 rounds 1.3%. Labels are not
    range-checked (that would synchronise with the device).
    """
    _check_inputs(x, labels, centroids, multiple, rounds)
    n, s, d = x.shape
    k = centroids.shape[1]
    sizes = torch.zeros(n, k, dtype=torch.long, device=x.device).scatter_add_(1, labels, torch.ones_like(labels))
    rem = sizes % multiple
    receiver, quota = _plan(rem, multiple)  # (N, K) bool, (N, K) tokens each donor sheds

    # A donor sheds its quota of tokens with the cheapest move: the first `quota` of its run when tokens are
    # sorted by (cluster, cost). Shed slot i of a sequence belongs to the donor whose cumulative quota passes i.
    cand, cost = nearest_centroid(x, centroids, receiver, labels)  # (N, S): receiver, cost of moving there
    order, starts = _sort_groups(labels, cost, k)
    width = min(s, k * (multiple - 1) // 2)  # sum(quota) = demand <= supply, demand + supply <= K·(multiple-1)
    slot = torch.arange(width, device=x.device).expand(n, width).contiguous()
    quota_end = quota.cumsum(1)
    donor = torch.searchsorted(quota_end, slot, right=True).clamp_max(k - 1)  # (N, W)
    valid = slot < quota_end[:, -1:]
    pos = starts.gather(1, donor) + slot - (quota_end - quota).gather(1, donor)
    idx = order.gather(1, torch.where(valid, pos, 0))  # (N, W) token of each slot (token 0 on unused slots)
    xs, own = x.gather(1, idx[..., None].expand(n, width, d)), labels.gather(1, idx)  # (N, W, D), (N, W)
    cost, cand = cost.gather(1, idx), cand.gather(1, idx)
    pending = valid
    capacity = torch.where(receiver, multiple - rem, 0)  # (N, K)
    moved = torch.full_like(own, -1)
    # Each round every pending token proposes to its nearest receiver with room left; each receiver accepts
    # its cheapest proposers (ties: lower token index) up to its room.
    for step in range(rounds):
        if step > 0:
            # Recomputed over the shed slots (H200, 40 x 9,450 slots, K 300: 0.25 ms; holding their (W, K)
            # distances instead and masking them each round took 0.9 ms a round).
            cand, cost = nearest_centroid(xs, centroids, capacity > 0, own)
        proposes = pending & cost.isfinite()
        target = torch.where(proposes, cand, k)  # non-proposers go to a dummy receiver K that takes no one
        rank = _rank_within(target, cost, k + 1)
        accept = proposes & (rank < capacity.gather(1, target.clamp_max(k - 1)))
        moved = torch.where(accept, target, moved)
        pending = pending & ~accept
        capacity = capacity - torch.zeros_like(capacity).scatter_add_(1, target.clamp_max(k - 1), accept.long())
    # Unused slots write into a spare column, so they never race with a real slot for the same token.
    spare = torch.cat([labels, torch.zeros_like(labels[:, :1])], 1)
    spare.scatter_(1, torch.where(valid, idx, s), torch.where(moved >= 0, moved, own))
    return spare[:, :s].contiguous()


def _plan(rem: torch.Tensor, multiple: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) remainders -> receivers (N, K) bool and the tokens each cluster sheds (N, K) int64.

    Receivers are the j clusters with the largest rem, j the largest count whose demand sum(multiple - rem)
    is at most the supply sum(rem) of the other clusters. The excess supply (< multiple) stays with the
    donors of largest rem, so at most one donor sheds only part of its rem and supply equals demand;
    spreading the excess over the matching would leave many donors with a partial tile instead.
    """
    by_rem = rem.sort(dim=1, descending=True, stable=True)  # ties: lower cluster index first
    r = by_rem.values
    zero = torch.zeros_like(r[:, :1])
    demand = torch.cat([zero, ((multiple - r) * (r > 0)).cumsum(1)], 1)  # (N, K+1): first j receivers
    supply = r.sum(1, keepdim=True) - torch.cat([zero, r.cumsum(1)], 1)  # the rest
    # demand rises and supply falls with j, so the feasible j form a prefix 0..count-1 (j = 0 always is).
    count = (demand <= supply).sum(1, keepdim=True) - 1
    is_receiver = torch.arange(rem.shape[1], device=rem.device) < count  # (N, K) in sorted order
    excess = (supply - demand).gather(1, count)
    donated = torch.where(is_receiver, 0, r)
    kept = (excess - (donated.cumsum(1) - donated)).clamp(min=0).minimum(donated)
    receiver = torch.empty_like(is_receiver).scatter_(1, by_rem.indices, is_receiver & (r > 0))
    quota = torch.empty_like(r).scatter_(1, by_rem.indices, donated - kept)
    return receiver, quota


def _sort_groups(group: torch.Tensor, key: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One stable sort of (N, S) tokens by (group, key), ties by token index: the order (N, S) and the first
    sorted position of each group (N, groups). ``key`` float32 (inf allowed, no NaN)."""
    bits = key.float().contiguous().view(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # the float order as a signed int32 order
    order = torch.sort((group << 32) | (bits.long() + (1 << 31)), dim=1, stable=True).indices
    counts = torch.zeros(group.shape[0], groups, dtype=torch.long, device=group.device)
    counts.scatter_add_(1, group, torch.ones_like(group))
    return order, counts.cumsum(1) - counts


def _rank_within(group: torch.Tensor, key: torch.Tensor, groups: int) -> torch.Tensor:
    """Rank of each token within its group (N, S) in [0, groups) by ascending key, ties by token index."""
    order, starts = _sort_groups(group, key, groups)
    pos = torch.arange(group.shape[1], device=group.device).expand_as(group)
    return torch.empty_like(order).scatter_(1, order, pos - starts.gather(1, group.gather(1, order)))


def _check_multiple(multiple: int) -> None:
    check_int("multiple", multiple, minimum=1, hint="the query tile rows")


def _check_inputs(x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, multiple: int, rounds: int) -> None:
    for name, t in (("x", x), ("labels", labels), ("centroids", centroids)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} is a {type(t).__name__}; expected a torch.Tensor")
    if x.dim() != 3 or not x.is_floating_point():
        raise ValueError(f"x has shape {tuple(x.shape)} and dtype {x.dtype}; expected (N, S, D) floating point")
    n, s, d = x.shape
    if tuple(labels.shape) != (n, s) or labels.dtype != torch.long:
        raise ValueError(f"labels have shape {tuple(labels.shape)} and dtype {labels.dtype}; expected {(n, s)} int64")
    if centroids.dim() != 3 or centroids.shape[0] != n or centroids.shape[2] != d or centroids.shape[1] < 1:
        raise ValueError(f"centroids have shape {tuple(centroids.shape)}; expected ({n}, K, {d}) with K >= 1")
    if not centroids.is_floating_point():
        raise ValueError(f"centroids have dtype {centroids.dtype}; expected floating point")
    if not (x.device == labels.device == centroids.device):
        raise ValueError(f"x, labels, centroids devices differ: {x.device}, {labels.device}, {centroids.device}")
    _check_multiple(multiple)
    check_int("rounds", rounds)
