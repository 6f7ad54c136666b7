"""SVG1 against its definition in Sparse-VideoGen @ 5ce7b01, rebuilt densely here (toy shapes only)."""
import math

import pytest
import torch
import torch.nn.functional as F

from svg2.methods import build_method
from svg2.methods.svg1 import SVG1_PRESETS, band_width
from svg2.reference import masked_attention, token_mask
from svg2.timing import StageTimer
from svg2.methods.base import LayerState
from tests.svg2.baseline_checks import assert_cuda_graph_replays_eager

GRID = (4, 6, 6)          # 36-token frames, S = 144
TOY = dict(round_to=16, block_size=10)  # 16-token rounding (the release's 128 at toy size); a partial last block


def structured_heads(grid, seed=0, d=64):
    """Head 0 attends within its frame (spatial), head 1 the same position in every frame (temporal)."""
    g = torch.Generator().manual_seed(seed)
    frames, fs = grid[0], grid[1] * grid[2]
    f = torch.arange(frames).repeat_interleave(fs)
    p = torch.arange(fs).repeat(frames)
    spatial = F.one_hot(f, d).float() * 6
    temporal = F.one_hot(p % d, d).float() * 6
    q = torch.stack([spatial, temporal])[None] + 0.3 * torch.randn(1, 2, frames * fs, d, generator=g)
    k = torch.stack([spatial, temporal])[None] + 0.3 * torch.randn(1, 2, frames * fs, d, generator=g)
    v = torch.randn(1, 2, frames * fs, d, generator=g)
    return q, k, v


def release_profile_masks(frames, fs, round_to, mult, sink):
    """get_attention_mask: block band in the frame-major order and the same after the token-major reshape."""
    s = frames * fs
    spatial = torch.zeros(s, s, dtype=torch.bool)
    if sink:
        spatial[:, :fs] = True
    nb = math.ceil(s / round_to)
    for i in range(nb):
        for j in range(nb):
            if abs(i - j) < (fs * mult) // round_to:
                spatial[i * round_to:(i + 1) * round_to, j * round_to:(j + 1) * round_to] = True
    temporal = spatial.reshape(fs, frames, fs, frames).permute(1, 0, 3, 2).reshape(s, s)
    return spatial, temporal


def release_mask_mod(s, fs, band, rule):
    """generate_temporal_head_mask_mod (video part), in a head's own layout: (S, S) bool."""
    i, j = torch.arange(s)[:, None], torch.arange(s)[None, :]
    if rule == "wan":
        return ((i - j).abs() <= band) | (j < fs)
    return (i - j).abs() < band


def block_any(mask, block):
    """The blocks that hold at least one kept pair (flex_attention's block mask), expanded back to tokens."""
    s = mask.shape[0]
    idx = torch.arange(s) // block
    nb = int(idx[-1]) + 1
    blocks = torch.zeros(nb, nb, dtype=torch.bool)
    blocks.index_put_((idx[:, None].expand(s, s)[mask], idx[None, :].expand(s, s)[mask]), torch.tensor(True))
    return blocks[idx][:, idx]


def reference(method, q, k, v, grid, rows):
    """Per head: the release's choice (float64 MSE over the sampled rows), then its block mask in the original
    token order. Returns ((B, H, S, S) mask, (B, H) temporal flags)."""
    c = method.config
    frames, fs = grid[0], grid[1] * grid[2]
    s = frames * fs
    sink = c.rule == "wan"
    mult = 2 if c.rule == "wan" else 1.5
    profiles = release_profile_masks(frames, fs, c.round_to, mult, sink)
    _, band = band_width(c, grid)
    layout = release_mask_mod(s, fs, band, c.rule)
    planned = block_any(layout, c.block_size)
    # token-major placement: position p*frames + f holds token f*fs + p
    tm = torch.arange(s).reshape(frames, fs).T.reshape(-1)
    inv = torch.empty_like(tm)
    inv[tm] = torch.arange(s)
    b, h = q.shape[:2]
    masks, kinds = torch.zeros(b, h, s, s, dtype=torch.bool), torch.zeros(b, h, dtype=torch.bool)
    for bi in range(b):
        for hi in range(h):
            qq, kk, vv = (t[bi, hi].double() for t in (q, k, v))
            scores = qq[rows] @ kk.T / math.sqrt(q.shape[-1])
            dense = torch.softmax(scores, -1) @ vv
            err = [((torch.softmax(scores.masked_fill(~m[rows], -math.inf), -1) @ vv - dense) ** 2).mean()
                   for m in profiles]
            temporal = bool(err[1] < err[0])
            kinds[bi, hi] = temporal
            masks[bi, hi] = planned[inv][:, inv] if temporal else planned
    return masks, kinds


def plan_of(method, q, k, v, grid):
    return method.plan(q, k, v, LayerState(), grid, StageTimer(q.device))


def labels_of(perm, sizes):
    """Block label of every original token: (N, S)."""
    n, s = perm.order.shape
    in_order = torch.repeat_interleave(torch.arange(sizes.shape[-1]), sizes[0])
    return torch.empty(n, s, dtype=torch.long).scatter_(1, perm.order, in_order.expand(n, s))


@pytest.mark.parametrize("rule, sparsity", [("wan", 0.3), ("hunyuan", 0.45)])
def test_plan_is_the_release_mask_on_its_blocks(rule, sparsity):
    q, k, v = structured_heads(GRID)
    method = build_method("svg1", sparsity=sparsity, rule=rule, num_sampled_rows=24, **TOY)
    rows = method.static_plan(144, GRID, q.device)["draws"][0]
    ref, kinds = reference(method, q, k, v, GRID, rows)
    assert kinds.tolist() == [[False, True]]  # the structured heads are told apart
    plan = plan_of(method, q, k, v, GRID)
    lab = labels_of(plan.q_perm, plan.block_map.row_sizes.reshape(2, -1)).reshape(1, 2, -1)
    got = token_mask(plan.block_map.keep, lab, lab)
    assert torch.equal(got, ref)
    torch.testing.assert_close(plan.block_map.density(), ref.double().mean((-1, -2)), rtol=0, atol=1e-12)
    method = build_method("svg1", sparsity=sparsity, rule=rule, num_sampled_rows=24, **TOY)
    out = method(q, k, v, grid=GRID)
    torch.testing.assert_close(out, masked_attention(q, k, v, ref), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_plan_keeps_a_superset_of_the_token_mask_close_to_it_on_wan_480p():
    # Wan 1.3B 480p grid, release rule and settings: 128-token blocks in each head's layout.
    grid = (21, 30, 52)
    method = build_method("svg1", **SVG1_PRESETS["wan_t2v_1.3b_480p"])
    s, fs = math.prod(grid), grid[1] * grid[2]
    st = method.static_plan(s, grid, "cpu")
    _, band = band_width(method.config, grid)
    assert band == 4480
    j = torch.arange(s, dtype=torch.int32)
    blocks = j // 128
    rows = j[::5]  # every 5th query row (5 is prime to 128: every offset inside a block is visited)
    extra = kept = 0
    for i in rows.split(2048):  # (2048, S) token-mask rows at a time
        tok = ((i[:, None] - j[None, :]).abs() <= band) | (j < fs)[None, :]
        blk = st["keep"][blocks[i]][:, blocks]
        assert not (tok & ~blk).any()  # never drops a pair the release attends
        extra += int((blk & ~tok).sum())
        kept += int(tok.sum())
    assert kept / (rows.numel() * s) == pytest.approx(0.2948, abs=2e-4)
    assert extra / (rows.numel() * s) == pytest.approx(0.0058, abs=2e-4)  # block plan 0.3006


def test_embedded_model_band_is_not_empty_and_maps_the_knob():
    grid = (16, 16, 16)
    bands = {sp: band_width(build_method("svg1", sparsity=sp).config, grid)[1] for sp in (0.1, 0.15, 0.25, 0.35)}
    assert bands == {0.1: 256, 0.15: 384, 0.25: 640, 0.35: 896}
    for sp in bands:
        build_method("svg1", sparsity=sp).check_shape(tokens=4096, grid=grid, heads=2, head_dim=64)
    # the floor rule does empty it below one 128-token step; the error says so before any call
    with pytest.raises(ValueError, match="svg1 band is empty: sparsity=0.05 .* rounds down to 0"):
        build_method("svg1", sparsity=0.05, rule="hunyuan").check_shape(tokens=4096, grid=grid, heads=2, head_dim=64)
    with pytest.raises(ValueError, match="profiling band is empty"):
        build_method("svg1").check_shape(tokens=3 * 7 * 8, grid=(3, 7, 8), heads=2, head_dim=64)


def test_attn_gym_spatial_mask_is_the_hunyuan_rule():
    # attn-gym's generate_spatial_head_mask_mod (floor, <, no sink) is the release's Hunyuan mask_mod on video
    # tokens, so its flex block mask is our plan for a spatial head. Its temporal mask keeps
    # |in-frame index difference| < width·fs/frames in the original order and is not the release's.
    svg = pytest.importorskip("attn_gym.masks.svg")
    grid = (5, 16, 24)
    s, fs = math.prod(grid), grid[1] * grid[2]
    method = build_method("svg1", sparsity=0.3, rule="hunyuan")
    width, band = band_width(method.config, grid)
    i, j = torch.arange(s)[:, None], torch.arange(s)[None, :]
    gym = svg.generate_spatial_head_mask_mod(prompt_length=0, num_frames=grid[0], token_per_frame=fs,
                                             width=width / fs, attn_sink=False, round_width=128)(0, 0, i, j)
    assert torch.equal(gym, release_mask_mod(s, fs, band, "hunyuan"))
    blocks = torch.arange(s) // 128
    assert torch.equal(method.static_plan(s, grid, "cpu")["keep"][blocks][:, blocks], block_any(gym, 128))
    gym_t = svg.generate_temporal_head_mask_mod(prompt_length=0, num_frames=grid[0], token_per_frame=fs,
                                                width=width / fs)(0, 0, i, j)
    tm = torch.arange(s).reshape(grid[0], fs).T.reshape(-1)
    inv = torch.empty_like(tm)
    inv[tm] = torch.arange(s)
    ours_t = release_mask_mod(s, fs, band, "hunyuan")[inv][:, inv]
    agree = float((gym_t == ours_t).double().mean())
    assert 0.5 < agree < 0.99


def test_joint_prompt_tokens_stay_dense_and_padding_is_ignored():
    q, k, v = structured_heads(GRID, seed=3)
    text = 6
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.cat([t, torch.randn(1, 2, text, t.shape[-1], generator=g)], 2) for t in (q, k, v))
    key_mask = torch.ones(1, 144 + text, dtype=torch.bool)
    key_mask[0, -2:] = False
    method = build_method("svg1", sparsity=0.3, num_sampled_rows=24, **TOY)
    out = method(q, k, v, grid=GRID, video=slice(0, 144), key_mask=key_mask)
    stock = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
    torch.testing.assert_close(out[:, :, 144:], stock[:, :, 144:], atol=1e-5, rtol=1e-5)
    # video queries: the video plan plus every valid prompt token
    video_ref, _ = reference(method, *(t[:, :, :144] for t in (q, k, v)), GRID,
                             method.static_plan(144, GRID, q.device)["draws"][0])
    full = key_mask[:, None, None, :].expand(1, 2, 144 + text, 144 + text).clone()
    full[:, :, :144, :144] = video_ref
    torch.testing.assert_close(out[:, :, :144], masked_attention(q, k, v, full)[:, :, :144], atol=1e-5, rtol=1e-5)


def test_static_part_is_built_once_and_rows_cycle_per_call():
    q, k, v = structured_heads(GRID)
    method = build_method("svg1", sparsity=0.3, num_sampled_rows=24, **TOY)
    method(q, k, v, grid=GRID)
    keep = method.static_plan(144, GRID, q.device)["keep"]
    method(q, k, v, grid=GRID, step=1)
    assert len(method.static) == 1 and method.static_plan(144, GRID, q.device)["keep"] is keep
    assert method.state.layer(0, 0).calls == 2


def test_presets_carry_the_release_scripts():
    assert set(SVG1_PRESETS) == {"wan_t2v_1.3b_480p", "wan_t2v_14b_720p", "wan_i2v_14b_720p", "hunyuan_720p"}
    c = build_method("svg1", **SVG1_PRESETS["wan_t2v_14b_720p"]).config
    assert (c.sparsity, c.num_sampled_rows, c.dense_steps, c.dense_layers, c.rule) == (0.3, 64, 0.2, 1, "wan")
    h = build_method("svg1", **SVG1_PRESETS["hunyuan_720p"]).config
    assert (h.sparsity, h.rule, h.context_length) == (0.25, "hunyuan", 256)
    assert c.label() == "svg1 wan b128 s0.3" and c.family() == "wan b128" and c.budget_label() == "s0.3"


@pytest.mark.parametrize("cfg, match", [
    (dict(sparsity=0.0), r"sparsity=0.0 is outside \(0, 1\]"),
    (dict(sparsity=1.5), r"sparsity=1.5 is outside"),
    (dict(rule="cog"), r"rule='cog'; expected one of \['hunyuan', 'wan'\]"),
    (dict(num_sampled_rows=0), "num_sampled_rows=0; expected a positive integer"),
    (dict(block_size=2.5), "block_size=2.5"),
    (dict(context_length=-1), "context_length=-1"),
])
def test_bad_config_is_named(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_method("svg1", **cfg)


def test_needs_the_grid():
    q, k, v = structured_heads(GRID)
    with pytest.raises(ValueError, match="svg1 needs the latent grid"):
        build_method("svg1", **TOY)(q, k, v)
    with pytest.raises(ValueError, match=r"grid=\(4, 6, 5\) has 120 tokens; q has S=144"):
        build_method("svg1", **TOY)(q, k, v, grid=(4, 6, 5))


@pytest.mark.gpu
def test_one_call_is_captured_in_a_cuda_graph():
    from eval.synthetic import structured_qkv

    grid = (21, 30, 52)
    assert_cuda_graph_replays_eager(build_method("svg1", sparsity=0.25), grid,
                                    qkv=structured_qkv(4, grid, 128, device="cuda"))


def test_kernel_path_matches_torch_path(monkeypatch):
    # The Triton kernel (through the interpreter on CPU tensors) reads q and writes the output through the
    # per-head query order of a mixed spatial / temporal plan with expanded (stride-0) block maps.
    import svg2.attention as attention

    q, k, v = structured_heads(GRID, d=32)
    cfg = dict(sparsity=0.3, num_sampled_rows=24, **TOY)
    torch_out = build_method("svg1", **cfg)(q, k, v, grid=GRID)
    monkeypatch.setattr(attention, "kernel_covers", lambda t: True)  # the one place that picks the kernel
    assert (build_method("svg1", **cfg)(q, k, v, grid=GRID) - torch_out).abs().max() < 1e-4
