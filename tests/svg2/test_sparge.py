"""SpargeAttn's plan against its rule rebuilt plainly from thu-ml/SpargeAttn (get_block_map_meansim_fuse_quant),
the Triton pooling against the torch path, and the CUDA graph path."""
import math

import pytest
import torch

from svg2.methods import build_method
from svg2.methods.sparge import SPARGE_APIS, pool_similarity_torch, topk_count
from tests.svg2.baseline_checks import assert_cuda_graph_replays_eager, assert_joint, assert_plan_matches

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def reference_mask(q, k, *, block_q, block_k, simthreshd1, topk=None, cdfthreshd=None, attention_sink=False):
    """(B, H, S, S) token mask of upstream's block map, in float64 with an explicit Gram matrix per block."""
    b, h, s, d = q.shape

    def blocks(x, size):
        # [(mean, self-similar)] per block, as upstream's kernel: `size` rows, zeros past S (their 0/0 unit
        # vectors make a partial block NaN), sums divided by the real count.
        out = []
        for start in range(0, s, size):
            t = torch.cat([x[start:start + size], x.new_zeros(max(0, start + size - s), d)])
            real = min(size, s - start)
            unit = t / t.norm(dim=-1, keepdim=True)
            out.append((t.sum(0) / real, ((unit @ unit.T).sum() / real ** 2).item() > simthreshd1))
        return out

    qb, kb = math.ceil(s / block_q), math.ceil(s / block_k)
    keep = torch.zeros(b, h, qb, kb, dtype=torch.bool)
    for i in range(b):
        for j in range(h):
            qs = blocks(q[i, j].double(), block_q)
            ks = blocks(k[i, j].double() - k[i, j].double().mean(0), block_k)  # smoothed keys
            sim_k = torch.tensor([sim for _, sim in ks])
            scores = torch.stack([m for m, _ in qs]) @ torch.stack([m for m, _ in ks]).T / math.sqrt(d)
            probs = torch.softmax(scores.masked_fill(~sim_k[None], float("-inf")), dim=-1)
            for row, (_, sim_q) in enumerate(qs):
                order = torch.argsort(probs[row], descending=True)
                if topk is not None:
                    count = int(torch.tensor(topk, dtype=torch.float32) * kb)
                else:
                    count = int((torch.cumsum(probs[row][order], 0) <= cdfthreshd).sum())
                keep[i, j, row, order[:max(count, 1)]] = True
                if not sim_q:
                    keep[i, j, row] = True
            keep[i, j, :, ~sim_k] = True
            if attention_sink:
                keep[i, j, :, 0] = True
    return keep[:, :, torch.arange(s) // block_q][:, :, :, torch.arange(s) // block_k]


def similar_blocks_inputs(b, h, s, d, block, seed):
    """Tokens near one direction per block of ``block`` (self-similar), every third block random."""
    g = torch.Generator().manual_seed(seed)
    nb = math.ceil(s / block)
    centres = torch.randn(b, h, nb, d, generator=g)
    labels = torch.arange(s) // block
    x = centres[:, :, labels] + 0.4 * torch.randn(b, h, s, d, generator=g)
    noisy = (labels % 3 == 2)
    x[:, :, noisy] = torch.randn(b, h, int(noisy.sum()), d, generator=g)
    return x


@pytest.mark.parametrize("grid, cfg", [
    ((4, 5, 6), dict(block_q=16, block_k=32, topk=0.5, simthreshd1=-0.1)),       # S = 120, partial blocks
    ((3, 7, 11), dict(block_q=32, block_k=16, topk=0.3, simthreshd1=0.3)),       # S = 231, the gate active
    ((3, 7, 11), dict(block_q=16, block_k=16, topk=None, cdfthreshd=0.7, simthreshd1=0.25)),
    ((4, 8, 8), dict(block_q=8, block_k=16, topk=None, cdfthreshd=0.98, simthreshd1=0.6, attention_sink=True)),
    ((4, 8, 8), dict(block_q=64, block_k=128, topk=0.1, simthreshd1=-0.1)),       # int(0.1 * 2) = 0 -> 1 block
])
def test_plan_equals_the_reference_mask(grid, cfg):
    s = math.prod(grid)
    q = similar_blocks_inputs(2, 2, s, 16, cfg["block_q"], s)
    k = similar_blocks_inputs(2, 2, s, 16, cfg["block_k"], s + 1)
    v = torch.randn(2, 2, s, 16)
    want = reference_mask(q, k, **cfg)
    density = assert_plan_matches(build_method("sparge", **cfg), q, k, v, grid, want)
    assert 0 < float(density.mean()) <= 1


def test_gate_and_rules_do_what_the_release_says():
    s, d = 256, 16
    q = similar_blocks_inputs(1, 1, s, d, 32, 0)
    k = similar_blocks_inputs(1, 1, s, d, 32, 1)
    # A gate no block passes computes everything; the top-k rule keeps int(topk * KB) blocks per row.
    _, dense = _mask(q, k, dict(block_q=32, block_k=32, topk=0.25, simthreshd1=1.0))
    assert dense.all()
    plan, _ = _mask(q, k, dict(block_q=32, block_k=32, topk=0.25, simthreshd1=-1.0))
    assert plan.block_map.keep.sum(-1).eq(2).all()  # int(0.25 * 8)
    # The CDF rule stops before crossing the threshold: a tiny threshold keeps exactly one block per row.
    plan, _ = _mask(q, k, dict(block_q=32, block_k=32, topk=None, cdfthreshd=1e-6, simthreshd1=-1.0))
    assert plan.block_map.keep.sum(-1).eq(1).all()
    assert topk_count(0.7, 10) == 7 and topk_count(0.01, 8) == 1 and topk_count(0.4, 591) == 236


def _mask(q, k, cfg):
    from tests.svg2.baseline_checks import plan_token_mask

    return plan_token_mask(build_method("sparge", **cfg), q, k, k, None)


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # the zero token's 0/0, on purpose
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("s, block", [(120, 32), (64, 64), (100, 48)])
def test_kernel_equals_the_torch_path(s, block, dtype):
    from svg2.kernels.blockpool import pool_similarity

    x = similar_blocks_inputs(1, 3, s, 16, block, s)[0].to(dtype).to(DEV)
    mean = x.float().mean(1)
    for m in (None, mean):
        want = pool_similarity_torch(x, block, m)
        got = pool_similarity(x, block, m)
        tol = 1e-5 if dtype == torch.float32 else 2e-3
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    zero = x.clone()
    zero[0, 5] = 0  # a zero token: NaN similarity, as upstream, so its block is computed whole
    assert pool_similarity(zero, block)[1][0, 0].isnan() and pool_similarity_torch(zero, block)[1][0, 0].isnan()


def test_joint_video_and_prompt():
    assert_joint(lambda **c: build_method("sparge", block_q=8, block_k=16, **c),
                 sparse_cfg=dict(topk=0.5), dense_cfg=dict(topk=1.0))


def test_config_label_family_apis_and_errors():
    c = build_method("sparge").config
    assert (c.topk, c.cdfthreshd, c.simthreshd1, c.block_q, c.block_k) == (0.5, None, -0.1, 64, 128)
    assert c.label() == "sparge topk 64x128 sim-0.1 k0.5" and c.family() == "topk 64x128 sim-0.1"
    cdf = build_method("sparge", **SPARGE_APIS["cdf"]).config
    assert cdf.label() == "sparge cdf 64x128 sim0.6 cdf0.98" and cdf.family() == "cdf 64x128 sim0.6"
    for cfg, match in [(dict(topk=None), "set exactly one budget"),
                       (dict(cdfthreshd=0.9), "set exactly one budget"),
                       (dict(topk=0.0), r"topk=0.0 is outside \(0, 1\]"),
                       (dict(topk=None, cdfthreshd=1.5), "cdfthreshd=1.5"),
                       (dict(simthreshd1=2.0), r"simthreshd1=2.0; expected a mean cosine in \[-1, 1\]"),
                       (dict(block_q=0), "block_q=0"), (dict(block_k=1.5), "block_k=1.5")]:
        with pytest.raises(ValueError, match=match):
            build_method("sparge", **cfg)


@pytest.mark.gpu
@pytest.mark.parametrize("api", ["topk", "cdf"])
def test_one_call_is_captured_in_a_cuda_graph(api):
    assert_cuda_graph_replays_eager(build_method("sparge", **SPARGE_APIS[api]))


@pytest.mark.gpu
def test_kernel_at_a_real_shape():
    from svg2.kernels.blockpool import pool_similarity

    x = torch.randn(4, 75_600, 128, device="cuda", dtype=torch.bfloat16)
    mean = x.float().mean(1)
    for block, m in ((64, None), (128, mean)):
        for a, b in zip(pool_similarity(x, block, m), pool_similarity_torch(x, block, m)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
