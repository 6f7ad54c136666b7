"""Radial attention against gen_log_mask_shrinked (radial-attention @ 72788d4), rebuilt plainly here."""
import math

import pytest
import torch
import torch.nn.functional as F

from svg2.methods import build_method
from svg2.methods.radial import RADIAL_PRESETS, radial_block_mask
from svg2.reference import masked_attention
from tests.svg2.baseline_checks import assert_cuda_graph_replays_eager


def release_mask(grid, decay, block, sink):
    """The release's steps, pair by pair: an (fs, fs) token mask, placed on the block grid, cut, shrunk, OR-ed.
    S is padded up to a multiple of the block as the release's Hunyuan path pads video + text."""
    frames, fs = grid[0], grid[1] * grid[2]
    video = frames * fs
    padded = math.ceil(video / block) * block
    final = torch.zeros(padded // block, padded // block, dtype=torch.bool)
    final[video // block:] = True
    final[:, video // block:] = True
    r, c = torch.arange(fs)[:, None], torch.arange(fs)[None, :]
    for i in range(frames):
        for j in range(frames):
            dist = abs(i - j)
            if sink and j == 0:
                local = torch.ones(fs, fs, dtype=torch.bool)
            else:
                group = dist.bit_length()
                if dist <= 1:
                    width = fs
                else:
                    width = 2 ** fs.bit_length() / 2 ** group * decay
                    width = width if width >= block else block
                local = (c - r).abs() <= width
                split_length = 2 ** fs.bit_length() / 2 ** group
                if split_length < 128 and dist % int(128 / split_length) != 0:
                    local = torch.zeros_like(local)
            rr, rc = i * fs % block, j * fs % block
            per = (fs - 1) // block + 1
            pad = torch.zeros(rr + per * block, rc + per * block, dtype=torch.bool)
            pad[rr:rr + fs, rc:rc + fs] = local
            shrunk = torch.zeros(per, per, dtype=torch.bool)
            for a in range(per):
                for b in range(per):
                    tile = pad[a * block:(a + 1) * block, b * block:(b + 1) * block]
                    col = tile.sum(0) / block
                    shrunk[a, b] = (col > 1 / 3).sum() / ((col > 0).sum() + 1e-9) > 0.6
            r0, c0 = i * fs // block, j * fs // block
            ra, cb = min(per, final.shape[0] - r0), min(per, final.shape[1] - c0)
            final[r0:r0 + ra, c0:c0 + cb] |= shrunk[:ra, :cb]
    return final


def expand(blocks, s, block):
    idx = torch.arange(s) // block
    return blocks[idx][:, idx]


@pytest.mark.parametrize("grid, decay, block, sink", [
    ((6, 8, 16), 0.2, 32, True),     # 128-token frames, block-aligned
    ((6, 8, 16), 1.0, 32, False),
    ((5, 9, 15), 0.5, 32, True),     # 135-token frames straddle blocks; S = 675 is not a block multiple
    ((9, 4, 8), 0.95, 16, False),    # 32-token frames: the hard-coded 128 split drops adjacent frames
    ((7, 16, 16), 0.2, 64, True),    # 256-token frames, like the embedded model
])
def test_block_mask_is_the_releases(grid, decay, block, sink):
    ref = release_mask(grid, decay, block, sink)
    got = radial_block_mask(grid, build_method("radial", decay_factor=decay, block_size=block, sink=sink).config)
    assert torch.equal(got, ref)


def test_plan_output_and_density_match_the_token_mask():
    grid, block = (5, 9, 15), 32
    s = math.prod(grid)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, s, 16, generator=g) for _ in range(3))
    method = build_method("radial", decay_factor=0.5, block_size=block)
    out = method(q, k, v, grid=grid)
    mask = expand(release_mask(grid, 0.5, block, True), s, block).expand(2, 2, s, s)
    torch.testing.assert_close(out, masked_attention(q, k, v, mask), atol=1e-5, rtol=1e-5)
    assert method.stats[-1].as_row()["density"] == pytest.approx(float(mask.double().mean()), abs=1e-12)
    assert 0.2 < float(mask.double().mean()) < 0.9


def test_release_settings_at_the_real_shapes():
    # Densities of the release's presets on this harness's grids (Wan 720p: 75,600 tokens, an 80-token last
    # block) and on the release's own 768x1280 canvases.
    def density(grid, preset):
        cfg = build_method("radial", **RADIAL_PRESETS[preset]).config
        keep = radial_block_mask(grid, cfg).double()
        sizes = torch.full((keep.shape[0],), 128.0, dtype=torch.float64)
        sizes[-1] = math.prod(grid) - 128 * (keep.shape[0] - 1)
        return float(sizes @ keep @ sizes) / math.prod(grid) ** 2
    assert density((21, 45, 80), "wan_t2v_14b_720p") == pytest.approx(0.2637, abs=1e-4)
    assert density((33, 45, 80), "hunyuan_720p") == pytest.approx(0.2704, abs=1e-4)
    assert density((18, 48, 80), "wan_t2v_14b_720p") == pytest.approx(0.2871, abs=1e-4)


def test_embedded_model_needs_small_blocks_for_a_budget():
    grid = (16, 16, 16)
    dens = {}
    for block in (128, 64, 32):
        for decay in (0.2, 1.0):
            keep = radial_block_mask(grid, build_method("radial", decay_factor=decay, block_size=block).config)
            dens[block, decay] = round(float(keep.double().mean()), 4)  # 4096 tokens: every block is full
    assert dens[128, 0.2] == dens[128, 1.0] == 0.6875   # decay_factor has no effect on 256-token frames
    assert dens[64, 0.2] < dens[64, 1.0] and dens[32, 0.2] == 0.3901


def test_joint_prompt_tokens_stay_dense_and_padding_is_ignored():
    grid, block, text = (6, 8, 16), 32, 7
    s = math.prod(grid)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, text + s, 16, generator=g) for _ in range(3))  # CogVideoX: prompt first
    key_mask = torch.ones(1, text + s, dtype=torch.bool)
    key_mask[0, 5:text] = False
    out = build_method("radial", decay_factor=0.2, block_size=block)(q, k, v, grid=grid, video=slice(text, text + s),
                                                                     key_mask=key_mask)
    full = key_mask[:, None, None, :].expand(1, 2, text + s, text + s).clone()
    full[:, :, text:, text:] = expand(release_mask(grid, 0.2, block, True), s, block)
    torch.testing.assert_close(out, masked_attention(q, k, v, full), atol=1e-5, rtol=1e-5)
    stock = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
    torch.testing.assert_close(out[:, :, :text], stock[:, :, :text], atol=1e-5, rtol=1e-5)


def test_mask_is_built_once_per_shape():
    grid = (6, 8, 16)
    q, k, v = (torch.randn(1, 2, 768, 16) for _ in range(3))
    method = build_method("radial", block_size=32)
    method(q, k, v, grid=grid)
    method(q, k, v, grid=grid, step=5)
    assert len(method.static) == 1


def test_presets_and_labels():
    assert set(RADIAL_PRESETS) == {"wan_t2v_14b_720p", "hunyuan_720p"}
    c = build_method("radial", **RADIAL_PRESETS["hunyuan_720p"]).config
    assert (c.decay_factor, c.dense_layers, c.dense_steps, c.sink) == (0.95, 0, 12, False)
    assert c.label() == "radial block 128 no sink d0.95" and c.family() == "block 128 no sink"


@pytest.mark.parametrize("cfg, match", [
    (dict(decay_factor=0), "decay_factor=0; expected a number > 0"),
    (dict(decay_factor="big"), "decay_factor='big'"),
    (dict(block_size=0), "block_size=0; expected a positive integer"),
    (dict(sink="yes"), "sink='yes'; expected True or False"),
])
def test_bad_config_is_named(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_method("radial", **cfg)


def test_needs_the_grid():
    q, k, v = (torch.randn(1, 2, 768, 16) for _ in range(3))
    with pytest.raises(ValueError, match="radial needs the latent grid"):
        build_method("radial")(q, k, v)


@pytest.mark.gpu
def test_one_call_is_captured_in_a_cuda_graph():
    from eval.synthetic import structured_qkv

    grid = (21, 30, 52)
    assert_cuda_graph_replays_eager(build_method("radial", **RADIAL_PRESETS["wan_t2v_14b_720p"]), grid,
                                    qkv=structured_qkv(4, grid, 128, device="cuda"), step=20, layer=3)


def test_kernel_path_matches_torch_path(monkeypatch):
    import svg2.attention as attention

    grid = (5, 9, 15)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, math.prod(grid), 16, generator=g) for _ in range(3))
    torch_out = build_method("radial", block_size=32)(q, k, v, grid=grid)
    monkeypatch.setattr(attention, "kernel_covers", lambda t: True)  # the one place that picks the kernel
    assert (build_method("radial", block_size=32)(q, k, v, grid=grid) - torch_out).abs().max() < 1e-4
