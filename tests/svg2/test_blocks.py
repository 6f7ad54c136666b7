import math

import pytest
import torch

from svg2.blocks import BlockMap, cluster_mass, select_blocks, select_by_mass


def table(rows):
    return torch.tensor(rows, dtype=torch.float32)[None]  # (1, QC, KC)


def test_top_p_keeps_every_cluster_whose_preceding_mass_is_at_most_top_p():
    # equal sizes: masses are softmax(scores) = [0.6, 0.3, 0.1] after scaling
    p = torch.tensor([0.6, 0.3, 0.1])
    scores = torch.log(p)[None, None]
    sizes = torch.ones(1, 3, dtype=torch.long)
    assert select_blocks(scores, sizes, top_p=0.5).tolist() == [[[True, False, False]]]
    assert select_blocks(scores, sizes, top_p=0.61).tolist() == [[[True, True, False]]]
    assert select_blocks(scores, sizes, top_p=0.95).tolist() == [[[True, True, True]]]


def test_top_p_at_exact_equality_keeps_the_next_cluster_as_the_reference_does():
    # The reference keeps rank j when j == 0 or cumsum[j-1] <= top_p: at equality one cluster more than
    # "the smallest set reaching top_p" (the rule before).
    mass = torch.tensor([[[0.5, 0.25, 0.25]]])  # exact in binary
    sizes = torch.ones(1, 3, dtype=torch.long)
    assert select_by_mass(mass, sizes, top_p=0.5).tolist() == [[[True, True, False]]]
    assert select_by_mass(mass, sizes, top_p=0.75).tolist() == [[[True, True, True]]]
    assert select_by_mass(mass, sizes, top_p=0.49).tolist() == [[[True, False, False]]]


def test_cluster_size_weights_the_mass():
    # same score, but cluster 1 holds 9x more tokens: it carries 90% of the mass
    scores = torch.zeros(1, 1, 2)
    sizes = torch.tensor([[1, 9]])
    torch.testing.assert_close(cluster_mass(scores, sizes), torch.tensor([[[0.1, 0.9]]]))
    assert select_blocks(scores, sizes, top_p=0.85).tolist() == [[[False, True]]]


def test_ties_go_to_the_lower_index():
    scores = torch.zeros(1, 1, 4)
    sizes = torch.ones(1, 4, dtype=torch.long)
    assert select_blocks(scores, sizes, top_p=0.4).tolist() == [[[True, True, False, False]]]
    assert select_blocks(scores, sizes, top_p=None, top_k=1).tolist() == [[[True, False, False, False]]]


def test_min_kc_ratio_is_a_floor():
    scores = table([[10.0, 0.0, 0.0, 0.0, 0.0]])
    sizes = torch.ones(1, 5, dtype=torch.long)
    assert select_blocks(scores, sizes, top_p=0.5).sum() == 1
    # int(0.4 * 5) = 2 key clusters at least
    keep = select_blocks(scores, sizes, top_p=0.5, min_kc_ratio=0.4)
    assert keep.sum() == 2 and keep[0, 0, 0]
    assert select_blocks(scores, sizes, top_p=None, top_k=1, min_kc_ratio=0.4).sum() == 2


def test_min_kc_floor_is_rounded_down_as_the_reference_does():
    # KC 64 at ratio 0.1: int(6.4) = 6 clusters at least (the rule before, ceil, kept 7); and int(0.07 * 100)
    # is 7 where ceil(0.07 * 100) is 8 (0.07 * 100 = 7.000000000000001).
    for kc, ratio, floor in ((64, 0.1, 6), (100, 0.07, 7), (1000, 0.1, 100)):
        mass = torch.softmax(torch.arange(kc, 0, -1).float() * 5, -1)[None, None]  # one dominant cluster
        keep = select_by_mass(mass, torch.ones(1, kc, dtype=torch.long), top_p=0.5, min_kc_ratio=ratio)
        assert int(keep.sum()) == floor


def test_empty_key_clusters_carry_no_mass_and_top_p_one_keeps_every_nonempty_cluster():
    scores = table([[50.0, 0.0, -80.0, 3.0]])  # cluster 0 empty despite the huge score; cluster 2 tiny mass
    sizes = torch.tensor([[0, 4, 4, 4]])
    mass = cluster_mass(scores, sizes)
    assert mass[0, 0, 0] == 0
    assert select_blocks(scores, sizes, top_p=0.5).tolist() == [[[False, False, False, True]]]
    assert select_blocks(scores, sizes, top_p=1.0).tolist() == [[[False, True, True, True]]]


def test_top_k_counts():
    scores = torch.randn(2, 5, 9)
    sizes = torch.randint(1, 5, (2, 9))
    keep = select_blocks(scores, sizes, top_p=None, top_k=3)
    assert (keep.sum(-1) == 3).all()
    mass = cluster_mass(scores, sizes)
    kept_min = mass.masked_fill(~keep, float("inf")).amin(-1)
    dropped_max = mass.masked_fill(keep, float("-inf")).amax(-1)
    assert (kept_min >= dropped_max).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(top_p=0.0), r"top_p=0.0 is outside \(0, 1\]"),
    (dict(top_p=1.5), r"top_p=1.5 is outside"),
    (dict(top_p=None, top_k=None), "expected exactly one budget"),
    (dict(top_p=None, top_k=10), r"top_k=10; expected an integer in \[1, KC=3\]"),
    (dict(top_p=0.5, min_kc_ratio=-0.1), "min_kc_ratio=-0.1 is outside"),
])
def test_bad_budget_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        select_blocks(torch.zeros(1, 2, 3), torch.ones(1, 3, dtype=torch.long), **kwargs)


def test_density_is_exact_token_level():
    keep = torch.tensor([[True, False], [True, True]])[None, None]
    bm = BlockMap(keep, torch.tensor([[[3, 7]]]), torch.tensor([[[6, 4]]]))
    assert math.isclose(float(bm.density()), (3 * 6 + 7 * 6 + 7 * 4) / 100)
    assert int(bm.kept_pairs()) == 3 * 6 + 7 * 6 + 7 * 4


def test_block_map_shape_mismatch_is_named():
    with pytest.raises(ValueError, match="do not match keep"):
        BlockMap(torch.ones(1, 1, 2, 3, dtype=torch.bool), torch.ones(1, 1, 2), torch.ones(1, 1, 2))
