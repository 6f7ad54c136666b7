"""XAttention's plan against its rule rebuilt plainly from mit-han-lab/x-attention (xattn_estimate, torch path,
non-causal; find_blocks_chunked), the Triton block scores against the torch path, and the CUDA graph path."""
import math

import pytest
import torch

from svg2.methods import build_method
from svg2.methods.xattention import XATTENTION_PRESETS, block_mass_torch, padded_length
from tests.svg2.baseline_checks import (assert_cuda_graph_replays_eager, assert_joint, assert_plan_matches,
                                       plan_token_mask)

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def reference_mask(q, k, *, stride, block, threshold):
    """(B, H, S, S) token mask of upstream's rule, in float64, written the way upstream writes it."""
    b, h, s, d = q.shape
    p = 1 << (s - 1).bit_length()
    chunk = int(max(min(max(2048, p), 128 * 1024 * 2048 // p), 2048))
    pad = (s + chunk - 1) // chunk * chunk - s
    qp, kp = (torch.cat([t.double(), t.new_zeros(b, h, pad, d).double()], dim=2) for t in (q, k))
    # Upstream's "inverse" reshape: keys k::stride in order, queries (stride-1-q)::stride, concatenated.
    rk = torch.cat([kp[:, :, m::stride] for m in range(stride)], dim=-1)
    rq = torch.cat([qp[:, :, (stride - 1 - m)::stride] for m in range(stride)], dim=-1)
    probs = torch.softmax(rq @ rk.transpose(-1, -2) / math.sqrt(d) / stride, dim=-1)
    if pad // stride:
        probs[:, :, -(pad // stride):] = 0
    rb, nb = block // stride, (s + pad) // block
    mass = probs.reshape(b, h, nb, rb, nb, rb).sum((3, 5))
    real = math.ceil(s / block)
    keep = torch.zeros(b, h, real, real, dtype=torch.bool)
    for i in range(b):
        for j in range(h):
            for row in range(real):
                m = mass[i, j, row]
                required, before = m.sum() * threshold, 0.0
                for col in torch.argsort(m, descending=True).tolist():
                    if before < required and col < real:
                        keep[i, j, row, col] = True
                    before += m[col].item()
                keep[i, j, row, 0] = True  # unselected index entries point at block 0
    tok = torch.arange(s) // block
    return keep[:, :, tok][:, :, :, tok]


def test_padded_length_is_upstreams_chunk_multiple():
    assert padded_length(4096) == 4096          # the embedded model: no padding
    assert padded_length(75_600) == 75_776      # Wan 14B 720p: chunk 2048
    assert padded_length(32_760) == 32_768      # Wan 1.3B 480p: chunk 8192
    assert padded_length(118_800) == 120_832    # HunyuanVideo 720p video tokens
    assert padded_length(120) == 2048 and padded_length(2049) == 4096


@pytest.mark.parametrize("grid, stride, block, threshold", [
    ((4, 5, 6), 4, 16, 0.6),     # S = 120: one partial block, padded to 2048 zero-key tokens
    ((3, 7, 11), 8, 32, 0.9),    # S = 231
    ((4, 8, 8), 2, 8, 0.3),      # S = 256, 32 blocks
    ((2, 33, 32), 8, 64, 0.4),   # S = 2112: padded to 4096
])
def test_plan_equals_the_reference_mask(grid, stride, block, threshold):
    torch.manual_seed(sum(grid) + stride)
    s = math.prod(grid)
    q, k, v = (torch.randn(2, 2, s, 16) * 2 for _ in range(3))
    method = build_method("xattention", stride=stride, block_size=block, threshold=threshold)
    want = reference_mask(q, k, stride=stride, block=block, threshold=threshold)
    density = assert_plan_matches(method, q, k, v, grid, want)
    assert 0 < float(density.mean()) < 1


def test_kept_mass_reaches_the_threshold_and_block_zero_is_kept():
    torch.manual_seed(3)
    q, k = torch.randn(1, 2, 512, 16) * 3, torch.randn(1, 2, 512, 16) * 3
    mass = block_mass_torch(q.reshape(2, 512, 16), k.reshape(2, 512, 16), stride=4, block=32, padded=2048)
    method = build_method("xattention", stride=4, block_size=32, threshold=0.7)
    plan, _ = plan_token_mask(method, q, k, k, None)
    keep = plan.block_map.keep.reshape(2, 16, 16)
    assert keep[..., 0].all()
    kept = (mass[..., :16] * keep).sum(-1) / mass.sum(-1)
    assert (kept >= 0.7 - 1e-6).all()
    # the padding (1,536 zero keys) holds mass, so the kept real mass does not reach 1 even at threshold 1
    assert (mass[..., 16:].sum(-1) > 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("s, stride, block, padded", [(120, 4, 16, 160), (200, 8, 32, 256), (64, 16, 16, 64)])
def test_kernel_equals_the_torch_path(s, stride, block, padded, dtype):
    from svg2.kernels.antidiagonal import ANTIDIAGONAL_CONFIGS, block_mass

    torch.manual_seed(s)
    q, k = (torch.randn(3, s, 16).to(dtype).to(DEV) for _ in range(2))
    want = block_mass_torch(q, k, stride=stride, block=block, padded=padded)
    got = block_mass(q, k, stride=stride, block=block, padded=padded, config=ANTIDIAGONAL_CONFIGS["test"])
    assert got.shape == want.shape == (3, math.ceil(s / block), padded // block)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)


def test_joint_video_and_prompt():
    assert_joint(lambda **c: build_method("xattention", stride=2, block_size=8, **c),
                 sparse_cfg=dict(threshold=0.5), dense_cfg=dict(threshold=1.0))


def test_embedded_model_grid_maps_to_32_blocks_without_padding():
    # 16 frames of 16 x 16: 128-token blocks are half a frame; S = 4,096 is its own chunk.
    from svg2.timing import StageTimer

    q, k, v = (torch.randn(1, 2, 4096, 64) for _ in range(3))
    method = build_method("xattention", stride=8, threshold=0.5)
    method.check_shape(tokens=4096, grid=(16, 16, 16), heads=2, head_dim=64)
    plan = method.plan(q, k, v, method.state.layer(0, 0), (16, 16, 16), StageTimer(q.device, enabled=False))
    assert plan.block_map.keep.shape == (1, 2, 32, 32) and padded_length(4096) == 4096


def test_config_label_family_presets_and_errors():
    c = build_method("xattention").config
    assert (c.threshold, c.stride, c.block_size) == (0.9, 16, 128)
    assert c.label() == "xattention stride 16 τ0.9" and c.family() == "stride 16"
    hy = build_method("xattention", **XATTENTION_PRESETS["hunyuan_720p"]).config
    assert (hy.threshold, hy.stride, hy.dense_steps, hy.dense_layers) == (0.95, 8, 0.1, 0)
    for cfg, match in [(dict(threshold=0.0), r"threshold=0.0 is outside \(0, 1\]"),
                       (dict(threshold=1.5), "threshold=1.5"),
                       (dict(stride=3), "stride=3; expected a power of two"),
                       (dict(stride=256), "stride=256 does not divide block_size=128"),
                       (dict(block_size=96), "block_size=96; expected a power of two <= 2048"),
                       (dict(block_size=4096), "block_size=4096")]:
        with pytest.raises(ValueError, match=match):
            build_method("xattention", **cfg)
    with pytest.raises(ValueError, match=r"grid=\(2, 5, 5\) has 50 tokens; q has S=60"):
        build_method("xattention").check_shape(tokens=60, grid=(2, 5, 5), heads=2, head_dim=16)


@pytest.mark.gpu
def test_one_call_is_captured_in_a_cuda_graph():
    assert_cuda_graph_replays_eager(build_method("xattention", stride=8, threshold=0.9))


@pytest.mark.gpu
@pytest.mark.parametrize("s, stride", [(32_760, 8), (75_600, 16)])
def test_kernel_at_real_shapes(s, stride):
    from svg2.kernels.antidiagonal import block_mass

    torch.manual_seed(stride)
    q, k = (torch.randn(2, s, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    padded = padded_length(s)
    got = block_mass(q, k, stride=stride, block=128, padded=padded)
    want = block_mass_torch(q, k, stride=stride, block=128, padded=padded)  # fp32 scores of the bf16 inputs
    assert (got - want).norm() / want.norm() < 1e-2
