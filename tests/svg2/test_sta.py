"""Sliding tile attention against FastVideo's flex oracle (generate_sta_mask), rebuilt densely here."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from svg2.methods import build_method
from svg2.methods.base import LayerState
from svg2.methods.sta import STA_PRESETS
from svg2.reference import masked_attention, token_mask
from svg2.timing import StageTimer
from tests.svg2.baseline_checks import assert_cuda_graph_replays_eager


def qkv(grid, h=2, d=16, seed=0, extra=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, h, math.prod(grid) + extra, d, generator=g) for _ in range(3)]


def release_mask(grid, tile, window):
    """generate_sta_mask's rule in the raster (frame-major) order, tile indices rounded up for partial tiles:
    key kept iff on every axis |clamp(q_tile, k//2, n-1-k//2) - kv_tile| <= k//2."""
    coords = torch.stack(torch.meshgrid(*(torch.arange(g) for g in grid), indexing="ij"), -1).reshape(-1, 3)
    keep = torch.ones(len(coords), len(coords), dtype=torch.bool)
    for axis in range(3):
        n = math.ceil(grid[axis] / tile[axis])
        t = coords[:, axis] // tile[axis]
        k = window[axis]
        centre = t.clamp(k // 2, n - 1 - k // 2)
        keep &= (centre[:, None] - t[None, :]).abs() <= k // 2
    return keep


def tile_major(grid, tile):
    """FastVideo's tile(): raster order -> (n_t n_h n_w ts_t ts_h ts_w), for canvases that are tile multiples."""
    (t, h, w), (a, b, c) = grid, tile
    idx = torch.arange(t * h * w).reshape(t // a, a, h // b, b, w // c, c)
    return idx.permute(0, 2, 4, 1, 3, 5).reshape(-1)


def plan_mask(method, q, k, v, grid):
    plan = method.plan(q, k, v, LayerState(), grid, StageTimer(q.device))
    n, s = plan.q_perm.order.shape
    sizes = plan.block_map.row_sizes.reshape(n, -1)
    lab = torch.stack([torch.empty(s, dtype=torch.long).scatter_(
        0, plan.q_perm.order[i], torch.repeat_interleave(torch.arange(sizes.shape[1]), sizes[i])) for i in range(n)])
    lab = lab.reshape(*q.shape[:2], s)
    return plan, token_mask(plan.block_map.keep, lab, lab)


@pytest.mark.parametrize("grid, tile, window", [
    ((4, 6, 8), (2, 3, 4), (1, 1, 1)),     # canvas a tile multiple
    ((6, 6, 8), (2, 3, 2), (3, 1, 3)),
    ((5, 7, 9), (2, 3, 4), (3, 3, 1)),     # partial edge tiles on every axis
    ((5, 7, 9), (2, 3, 4), (2, 2, 2)),     # even windows keep k + 1 tiles
    ((3, 5, 5), (2, 2, 2), (7, 7, 7)),     # window larger than the canvas: everything
])
def test_plan_is_the_release_mask(grid, tile, window):
    q, k, v = qkv(grid)
    method = build_method("sta", tile=tile, window=window)
    plan, got = plan_mask(method, q, k, v, grid)
    ref = release_mask(grid, tile, window)
    assert torch.equal(got, ref.expand_as(got))
    torch.testing.assert_close(plan.block_map.density(), ref.double().mean().expand(1, 2), rtol=0, atol=1e-12)
    out = method(q, k, v, grid=grid)
    torch.testing.assert_close(out, masked_attention(q, k, v, ref.expand_as(got)), atol=1e-5, rtol=1e-5)


def test_tile_major_order_is_fastvideos_on_tile_multiples():
    grid, tile = (4, 6, 8), (2, 3, 4)
    plan, _ = plan_mask(build_method("sta", tile=tile, window=(1, 1, 1)), *qkv(grid), grid)
    assert torch.equal(plan.q_perm.order[0], tile_major(grid, tile))
    assert plan.block_map.row_sizes.unique().tolist() == [24]


@pytest.mark.parametrize("window, agrees", [((1, 1, 1), True), ((3, 1, 3), True), ((3, 3, 3), True),
                                            ((2, 2, 2), False)])
def test_attn_gym_agrees_for_odd_windows_only(window, agrees):
    # attn-gym's generate_sta_mask_mod_3d takes the kernel in tokens and keeps k tiles (left k//2, right
    # k//2 - 1 for even k), FastVideo k + 1 for even k; on odd windows they are the same mask.
    sta = pytest.importorskip("attn_gym.masks.sta")
    grid, tile = (8, 6, 8), (2, 2, 2)
    s = math.prod(grid)
    gym = sta.generate_sta_mask_mod_3d(grid, tuple(w * t for w, t in zip(window, tile)), tile)
    i, j = torch.arange(s)[:, None], torch.arange(s)[None, :]
    gym_mask = gym(0, 0, i, j)  # in tile-major order
    order = tile_major(grid, tile)
    ours = release_mask(grid, tile, window)[order][:, order]
    assert torch.equal(gym_mask, ours) == agrees
    if not agrees:
        assert (gym_mask & ~ours).sum() == 0  # attn-gym keeps a subset: k tiles of FastVideo's k + 1
        assert 0.4 < float((gym_mask == ours).double().mean()) < 0.9


def test_per_head_windows_and_a_strategy_file(tmp_path):
    grid, tile = (4, 6, 8), (2, 3, 4)
    q, k, v = qkv(grid, h=3)
    windows = ((1, 1, 1), (3, 3, 3), (1, 3, 1))
    _, got = plan_mask(build_method("sta", tile=tile, head_windows=windows), q, k, v, grid)
    for h, w in enumerate(windows):
        assert torch.equal(got[0, h], release_mask(grid, tile, w))
    # FastVideo's mask-strategy format: "step_layer_head": [t, h, w]; 2 steps x 2 layers x 3 heads
    table = {f"{s}_{layer}_{h}": list(windows[(s + layer + h) % 3]) for s in range(2) for layer in range(2)
             for h in range(3)}
    path = tmp_path / "mask_strategy.json"
    path.write_text(json.dumps(table))
    method = build_method("sta", tile=tile, strategy=str(path))
    for step in range(2):
        for layer in range(2):
            out = method(q, k, v, layer=layer, step=step, grid=grid)
            ref = torch.stack([release_mask(grid, tile, windows[(step + layer + h) % 3]) for h in range(3)])[None]
            torch.testing.assert_close(out, masked_attention(q, k, v, ref), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"covers 2 steps x 2 layers; got step 2, layer 0"):
        method(q, k, v, layer=0, step=2, grid=grid)
    with pytest.raises(ValueError, match="has 3 heads per layer; the model has 2"):
        method(q[:, :2], k[:, :2], v[:, :2], grid=grid)
    del table["1_1_2"]
    path.write_text(json.dumps(table))
    with pytest.raises(ValueError, match="has 11 entries; expected every step, layer and head of 2 x 2 x 3"):
        build_method("sta", strategy=str(path))


def test_joint_prompt_tokens_stay_dense_and_padding_is_ignored():
    grid, tile, window = (4, 6, 8), (2, 3, 4), (1, 1, 3)
    s, text = math.prod(grid), 5
    q, k, v = qkv(grid, extra=text, seed=2)
    key_mask = torch.ones(1, s + text, dtype=torch.bool)
    key_mask[0, -2:] = False
    out = build_method("sta", tile=tile, window=window)(q, k, v, grid=grid, video=slice(0, s), key_mask=key_mask)
    full = key_mask[:, None, None, :].expand(1, 2, s + text, s + text).clone()
    full[:, :, :s, :s] = release_mask(grid, tile, window)
    torch.testing.assert_close(out, masked_attention(q, k, v, full), atol=1e-5, rtol=1e-5)
    stock = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
    torch.testing.assert_close(out[:, :, s:], stock[:, :, s:], atol=1e-5, rtol=1e-5)


def test_static_plan_is_built_once():
    grid = (4, 6, 8)
    q, k, v = qkv(grid)
    method = build_method("sta", tile=(2, 3, 4), window=(1, 1, 1))
    method(q, k, v, grid=grid)
    method(q, k, v, grid=grid, step=3)
    assert len(method.static) == 2  # one window-id table, one (shape, windows) plan
    method(q[..., :24, :], k[..., :24, :], v[..., :24, :], grid=(1, 6, 4))
    assert len(method.static) == 3


def test_presets_and_labels():
    assert set(STA_PRESETS) == {"hunyuan_720p", "wan_t2v_14b_720p", "wan_t2v_1.3b_480p"}
    c = build_method("sta", **STA_PRESETS["hunyuan_720p"]).config
    assert (c.tile, c.window, c.dense_steps) == ((6, 8, 8), (5, 3, 3), 15)
    assert c.label() == "sta tile 6x8x8 w5x3x3" and c.family() == "tile 6x8x8"
    assert build_method("sta", tile=[4, 4, 4]).config.tile == (4, 4, 4)  # lists from YAML


@pytest.mark.parametrize("cfg, match", [
    (dict(tile=(6, 8)), r"tile=\(6, 8\); expected three positive integers"),
    (dict(window=(0, 3, 3)), r"window=\(0, 3, 3\)"),
    (dict(head_windows=((1, 1, 1), (2, 2))), r"head_windows\[1\]=\(2, 2\)"),
    (dict(strategy="/nonexistent/mask.json"), "strategy='/nonexistent/mask.json' cannot be read"),
])
def test_bad_config_is_named(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_method("sta", **cfg)


def test_shape_checks_name_the_problem():
    q, k, v = qkv((4, 6, 8))
    with pytest.raises(ValueError, match="sta needs the latent grid"):
        build_method("sta")(q, k, v)
    with pytest.raises(ValueError, match="head_windows has 1 windows; the model has 2 heads"):
        build_method("sta", head_windows=((1, 1, 1),))(q, k, v, grid=(4, 6, 8))


@pytest.mark.gpu
def test_one_call_is_captured_in_a_cuda_graph():
    from eval.synthetic import structured_qkv

    grid = (21, 30, 52)
    assert_cuda_graph_replays_eager(build_method("sta", **STA_PRESETS["wan_t2v_1.3b_480p"]), grid,
                                    qkv=structured_qkv(4, grid, 128, device="cuda"))


def test_kernel_path_matches_torch_path(monkeypatch):
    import svg2.attention as attention

    grid = (5, 7, 9)
    q, k, v = qkv(grid, h=3, d=16)
    cfg = dict(tile=(2, 3, 4), head_windows=((1, 1, 1), (3, 3, 1), (2, 2, 2)))
    torch_out = build_method("sta", **cfg)(q, k, v, grid=grid)
    monkeypatch.setattr(attention, "kernel_covers", lambda t: True)  # the one place that picks the kernel
    assert (build_method("sta", **cfg)(q, k, v, grid=grid) - torch_out).abs().max() < 1e-4
