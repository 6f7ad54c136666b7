"""DraftAttention's plan against its rule rebuilt plainly from shawnricecake/draft-attention (Draft_Attention:
sample_qk_attention_2d, attention_percentile_mask_headwise, generate_reorg_indices), and the CUDA graph path."""
import math

import pytest
import torch

from svg2.methods import build_method
from svg2.methods.draft import DRAFT_PRESETS
from tests.svg2.baseline_checks import assert_cuda_graph_replays_eager, assert_joint, assert_plan_matches


def regions_of(grid, pool):
    """Region index of every token (frame, row band, column band), the region count."""
    t, h, w = grid
    nh, nw = math.ceil(h / pool[0]), math.ceil(w / pool[1])
    idx = [(f * nh + y // pool[0]) * nw + x // pool[1] for f in range(t) for y in range(h) for x in range(w)]
    return torch.tensor(idx), t * nh * nw


def reference_mask(q, k, grid, pool, sparsity):
    """(B, H, S, S) token mask of upstream's rule, in float64, region means taken token by token."""
    b, h, s, d = q.shape
    region, r = regions_of(grid, pool)
    members = [torch.nonzero(region == i).squeeze(1) for i in range(r)]
    keep = torch.zeros(b, h, r, r, dtype=torch.bool)
    for i in range(b):
        for j in range(h):
            pq = torch.stack([q[i, j, m].double().mean(0) for m in members])
            pk = torch.stack([k[i, j, m].double().mean(0) for m in members])
            draft = torch.softmax(pq @ pk.T / math.sqrt(d), dim=-1)
            flat = draft.flatten()
            drop = int((1.0 - (1 - sparsity)) * flat.numel())
            if drop == 0:
                keep[i, j] = True
            else:
                threshold = torch.topk(flat, drop, largest=False).values.max()
                keep[i, j] = draft >= threshold
    return keep[:, :, region][:, :, :, region]


def upstream_reorder(grid, pool):
    """generate_reorg_indices(total_len, part_size=W*pool_h, block_size=W, sub_block_size=pool_w), as upstream."""
    t, h, w = grid
    part, block, sub = w * pool[0], w, pool[1]
    pattern = [b * block + c * sub + i for c in range(block // sub) for b in range(part // block) for i in range(sub)]
    return torch.tensor([p * part + i for p in range(t * h * w // part) for i in pattern])


@pytest.mark.parametrize("grid, pool, sparsity", [
    ((2, 16, 32), (8, 16), 0.75),   # upstream's own case: divisible, 128-token regions
    ((3, 5, 7), (2, 3), 0.6),       # S = 105: edge regions smaller (ceil_mode pooling)
    ((4, 6, 10), (4, 4), 0.9),      # S = 240
    ((2, 4, 4), (2, 2), 0.0),       # sparsity 0 keeps everything
])
def test_plan_equals_the_reference_mask(grid, pool, sparsity):
    torch.manual_seed(sum(grid))
    s = math.prod(grid)
    q, k, v = (torch.randn(2, 2, s, 16) for _ in range(3))
    method = build_method("draft", pool_h=pool[0], pool_w=pool[1], sparsity=sparsity)
    density = assert_plan_matches(method, q, k, v, grid, reference_mask(q, k, grid, pool, sparsity))
    if sparsity == 0:
        assert (density == 1).all()


def test_reordering_is_upstreams_where_upstream_runs():
    grid, pool = (2, 16, 32), (8, 16)
    perm, sizes = build_method("draft").layout(3, grid, "cpu")
    assert torch.equal(perm.order, upstream_reorder(grid, pool).expand(3, -1))
    assert sizes.eq(128).all() and sizes.numel() == 2 * 2 * 2


def test_real_grids_get_smaller_edge_regions():
    # Wan 14B 720p: 45 latent rows (5 bands of 8 + one of 5) x 80 columns (5 of 16): 630 regions of 128 or 80.
    _, sizes = build_method("draft").layout(1, (21, 45, 80), "cpu")
    assert sizes.numel() == 630 and sizes.sum() == 75_600
    assert sorted(set(sizes.tolist())) == [80, 128]
    # The embedded model: 16 x 16 frames hold two 8 x 16 regions each.
    _, sizes = build_method("draft").layout(2, (16, 16, 16), "cpu")
    assert sizes.numel() == 32 and sizes.eq(128).all()


def test_kept_fraction_of_the_draft_map_is_one_minus_sparsity():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 3, 4096, 16) for _ in range(3))
    for sparsity in (0.6, 0.75, 0.9):
        method = build_method("draft", sparsity=sparsity)
        method(q, k, v, grid=(16, 16, 16))
        kept = 32 * 32 - int(sparsity * 32 * 32) + 1  # every entry >= the k-th smallest
        assert abs(method.stats[-1].as_row()["density"] - kept / 1024) < 1e-9


def test_joint_video_and_prompt():
    assert_joint(lambda **c: build_method("draft", pool_h=2, pool_w=4, **c),
                 sparse_cfg=dict(sparsity=0.7), dense_cfg=dict(sparsity=0.0))


def test_config_label_family_presets_and_errors():
    c = build_method("draft").config
    assert (c.pool_h, c.pool_w, c.sparsity) == (8, 16, 0.9)
    assert c.label() == "draft pool 8x16 sp0.9" and c.family() == "pool 8x16"
    wan = build_method("draft", **DRAFT_PRESETS["wan_t2v_14b_720p"]).config
    assert (wan.sparsity, wan.dense_layers, wan.dense_steps) == (0.75, 1, 0.3)
    hy = build_method("draft", **DRAFT_PRESETS["hunyuan_720p"]).config
    assert (hy.sparsity, hy.dense_layers, hy.dense_steps) == (0.9, 2, 0.3)
    for cfg, match in [(dict(sparsity=1.0), r"sparsity=1.0; expected a fraction in \[0, 1\)"),
                       (dict(sparsity=-0.1), "sparsity=-0.1"), (dict(pool_h=0), "pool_h=0"),
                       (dict(pool_w=2.5), "pool_w=2.5")]:
        with pytest.raises(ValueError, match=match):
            build_method("draft", **cfg)
    q = torch.randn(1, 1, 60, 16)
    with pytest.raises(ValueError, match="draft needs the latent grid"):
        build_method("draft")(q, q, q)
    with pytest.raises(ValueError, match=r"grid=\(2, 5, 5\) has 50 tokens; q has S=60"):
        build_method("draft")(q, q, q, grid=(2, 5, 5))


@pytest.mark.gpu
def test_one_call_is_captured_in_a_cuda_graph():
    assert_cuda_graph_replays_eager(build_method("draft", sparsity=0.75))
