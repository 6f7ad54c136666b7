"""Triton k-means assign/update and row gather vs the torch reference (TRITON_INTERPRET=1 on CPU)."""
import pytest
import torch

from svg2.kernels.kmeans import ASSIGN_CONFIGS, assign_nearest, cluster_means, move_costs
from svg2.kernels.permute import gather_rows
from svg2.kmeans import cluster_sums
from svg2.permute import permutation_from_labels

CFG = ASSIGN_CONFIGS["test"]
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # the interpreter on CPU, the compiled kernel on a GPU


def _dist(x, c):
    return ((x.float()[:, :, None, :] - c.float()[:, None, :, :]) ** 2).sum(-1)  # (N, S, K)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n,s,d,k", [(2, 53, 32, 7), (1, 40, 64, 21), (3, 17, 16, 17)])
def test_assign_picks_the_nearest_centroid(n, s, d, k, dtype):
    g = torch.Generator().manual_seed(s * k)
    x = torch.randn(n, s, d, generator=g).to(dtype).to(DEV)
    c = torch.randn(n, k, d, generator=g).to(DEV)
    labels = assign_nearest(x, c, CFG, out=torch.full((n, s), -1, dtype=torch.long, device=DEV))
    assert labels.min() >= 0 and labels.max() < k
    dist = _dist(x, c)
    chosen = dist.gather(2, labels[..., None])[..., 0]
    slack = 1e-4 if dtype == torch.float32 else 2e-2 * d  # fp16 rounds the centroids in the dot
    assert (chosen <= dist.min(-1).values + slack).all()
    if dtype == torch.float32:
        assert (labels == dist.argmin(-1)).float().mean() > 0.99


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n,s,d,k", [(2, 53, 32, 7), (1, 40, 64, 21)])
def test_move_costs_match_torch(n, s, d, k, dtype):
    # Tile alignment's pass: nearest open centroid and d(open) - d(own), fresh random inputs; one sequence
    # has no open cluster (cost inf).
    x = torch.randn(n, s, d).to(dtype).to(DEV)
    c = torch.randn(n, k, d).to(DEV)
    labels = torch.randint(0, k, (n, s)).to(DEV)
    is_open = torch.rand(n, k).to(DEV) < 0.4
    is_open[0, 0] = True
    if n > 1:
        is_open[1] = False
    cost, cand = move_costs(x, labels, c, is_open, CFG)
    dist = _dist(x, c)
    want = dist.masked_fill(~is_open[:, None, :], float("inf")).min(-1).values - dist.gather(2, labels[..., None])[..., 0]
    finite = want.isfinite()
    assert torch.equal(cost.isfinite(), finite)
    slack = 1e-3 if dtype == torch.float32 else 4e-2 * d
    assert (cost[finite] - want[finite]).abs().max() < slack
    assert is_open.gather(1, cand)[finite].all()


def test_assign_ties_go_to_the_lower_index():
    x = torch.zeros(1, 20, 16, device=DEV)
    c = torch.ones(1, 40, 16, device=DEV)  # every centroid equally far, across several centroid tiles
    assert (assign_nearest(x, c, CFG) == 0).all()


def test_cluster_means_match_torch_and_keep_empty_centroids():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 90, 32, generator=g)
    labels = torch.randint(0, 6, (2, 90), generator=g)
    labels[1] = 2  # sequence 1: one huge cluster, the others empty
    prev = torch.randn(2, 8, 32, generator=g)
    x, labels, prev = x.to(DEV), labels.to(DEV), prev.to(DEV)
    order = torch.sort(labels, dim=1).indices
    got, sizes = cluster_means(x, labels, prev, order, block_t=16)
    sums, want_sizes = cluster_sums(x, labels, 8)  # torch scatter_add reference
    want = torch.where(want_sizes[..., None] > 0, sums / want_sizes.clamp_min(1)[..., None], prev)
    assert torch.equal(sizes, want_sizes)
    assert (got - want).abs().max() < 1e-5
    assert torch.equal(got[1, [0, 1, 3, 4, 5, 6, 7]], prev[1, [0, 1, 3, 4, 5, 6, 7]])


@pytest.mark.parametrize("d", [16, 24, 128])
def test_gather_rows_permutes_and_inverts(d):
    g = torch.Generator().manual_seed(d)
    x = torch.randn(2, 37, d, generator=g).half()
    x = x.to(DEV)
    perm = permutation_from_labels(torch.randint(0, 5, (2, 37), generator=g).to(DEV), 5)
    y = gather_rows(x, perm.order, out=torch.full_like(x, float("nan")))
    assert torch.equal(y, x.gather(1, perm.order[..., None].expand_as(x)))
    assert torch.equal(gather_rows(y, perm.inverse), x)


def test_kernels_reject_bad_shapes():
    with pytest.raises(ValueError, match="D=24"):
        assign_nearest(torch.randn(1, 4, 24), torch.randn(1, 2, 24))
    with pytest.raises(ValueError, match="centroids have shape"):
        assign_nearest(torch.randn(1, 4, 16), torch.randn(2, 2, 16))
    with pytest.raises(ValueError, match="index has shape"):
        gather_rows(torch.randn(1, 4, 16), torch.zeros(1, 5, dtype=torch.long))
