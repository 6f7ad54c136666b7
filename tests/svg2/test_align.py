import dataclasses

import pytest
import torch

from svg2.align import align_cluster_sizes, partial_tiles
from svg2.kmeans import inertia, kmeans


def sizes_of(labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.zeros(labels.shape[0], k, dtype=torch.long).scatter_add_(1, labels, torch.ones_like(labels))


def clustered(n=2, s=5000, d=16, k=40, dtype=torch.float32):
    x = torch.randn(n, s, d).to(dtype)
    return x, kmeans(x, k, 3)


def check_moves(labels: torch.Tensor, new: torch.Tensor, k: int, multiple: int) -> torch.Tensor:
    """Properties every result has; returns the new sizes (N, K)."""
    assert new.dtype == torch.long and new.shape == labels.shape
    assert ((new >= 0) & (new < k)).all()
    old, sizes = sizes_of(labels, k), sizes_of(new, k)
    # No cluster crosses a tile boundary: donors only round down, receivers only round up.
    assert (sizes >= old - old % multiple).all() and (sizes <= old + (-old) % multiple).all()
    changed = new != labels
    out = sizes_of(torch.where(changed, labels, k), k + 1)[:, :k]
    into = sizes_of(torch.where(changed, new, k), k + 1)[:, :k]
    assert ((out == 0) | (into == 0)).all(), "a cluster both gave and took tokens"
    assert (changed.sum(1) <= (old % multiple).sum(1)).all()
    return sizes


def test_alignment_removes_most_padding_at_a_fraction_of_random_moves_cost():
    x, res = clustered()
    n, s, _ = x.shape
    new = align_cluster_sizes(x, res.labels, res.centroids, 16)
    sizes = check_moves(res.labels, new, 40, 16)
    assert (partial_tiles(sizes, 16) <= 0.3 * partial_tiles(res.sizes, 16)).all()

    base = inertia(x, res)
    ours = inertia(x, dataclasses.replace(res, labels=new, sizes=sizes)) - base
    # Baseline: as many random tokens moved to random receivers (clusters that grew).
    rand = res.labels.clone()
    for i in range(n):
        moved = int((new[i] != res.labels[i]).sum())
        receivers = (sizes[i] > res.sizes[i]).nonzero().squeeze(1)
        assert moved > 0 and len(receivers) > 0
        who = torch.randperm(s)[:moved]
        rand[i, who] = receivers[torch.randint(len(receivers), (moved,))]
    random_cost = inertia(x, dataclasses.replace(res, labels=rand)) - base
    assert (ours < random_cost).all()
    assert (ours < 0.02 * base).all()


def test_aligned_sizes_are_left_alone():
    n, k, m, tiles = 2, 12, 16, 120
    labels = []
    for _ in range(n):
        cuts = torch.randperm(tiles - 1)[:k - 1].sort().values + 1  # k positive tile counts summing to `tiles`
        counts = torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([tiles])])) * m
        labels.append(torch.arange(k).repeat_interleave(counts)[torch.randperm(tiles * m)])
    labels = torch.stack(labels)
    x = torch.randn(n, tiles * m, 8)
    assert torch.equal(align_cluster_sizes(x, labels, torch.randn(n, k, 8), m), labels)


def test_empty_clusters_stay_empty_even_when_nearest():
    x, res = clustered(k=20)
    # Five extra centroids sitting on data tokens: the cheapest place for those tokens, yet empty.
    extra = x[:, :5].float()
    centroids = torch.cat([res.centroids, extra], 1)
    new = align_cluster_sizes(x, res.labels, centroids, 16)
    sizes = check_moves(res.labels, new, 25, 16)
    assert (sizes[:, 20:] == 0).all()
    assert (partial_tiles(sizes, 16) < partial_tiles(res.sizes, 16)).all()


def test_deterministic_with_tied_costs():
    x, res = clustered(s=2000, k=20)
    x = torch.cat([x, x], 1)  # every token twice: every move cost is tied with its copy's
    labels = torch.cat([res.labels, res.labels], 1)
    first = align_cluster_sizes(x, labels, res.centroids, 16)
    assert torch.equal(first, align_cluster_sizes(x, labels, res.centroids, 16))
    check_moves(labels, first, 20, 16)


def test_nothing_moves_with_multiple_one_or_zero_rounds():
    x, res = clustered(s=1000, k=10)
    assert torch.equal(align_cluster_sizes(x, res.labels, res.centroids, 1), res.labels)
    assert torch.equal(align_cluster_sizes(x, res.labels, res.centroids, 16, rounds=0), res.labels)


def test_bf16_inputs():
    x, res = clustered(dtype=torch.bfloat16)
    new = align_cluster_sizes(x, res.labels, res.centroids, 16)
    sizes = check_moves(res.labels, new, 40, 16)
    assert (partial_tiles(sizes, 16) <= 0.3 * partial_tiles(res.sizes, 16)).all()


def test_partial_tiles_counts_padded_rows():
    sizes = torch.tensor([[0, 5, 16, 17], [64, 1, 63, 0]])
    assert partial_tiles(sizes, 16).tolist() == [11 + 15, 15 + 1]
    assert partial_tiles(sizes, 16).dtype == torch.float64
    with pytest.raises(ValueError, match="multiple=0"):
        partial_tiles(sizes, 0)


@pytest.mark.parametrize("change, match", [
    (dict(x=torch.randn(10, 4)), "x has shape"),
    (dict(x=torch.ones(1, 10, 4, dtype=torch.long)), "x has shape"),
    (dict(labels=torch.zeros(1, 10, dtype=torch.int32)), "labels have shape"),
    (dict(labels=torch.zeros(1, 9, dtype=torch.long)), "labels have shape"),
    (dict(centroids=torch.randn(1, 3, 5)), "centroids have shape"),
    (dict(centroids=torch.randn(2, 3, 4)), "centroids have shape"),
    (dict(multiple=0), "multiple=0"),
    (dict(multiple=16.0), "multiple=16.0"),
    (dict(rounds=-1), "rounds=-1"),
])
def test_bad_inputs_name_the_argument(change, match):
    args = dict(x=torch.randn(1, 10, 4), labels=torch.zeros(1, 10, dtype=torch.long),
                centroids=torch.randn(1, 3, 4), multiple=4, rounds=2)
    with pytest.raises(ValueError, match=match):
        align_cluster_sizes(**{**args, **change})
