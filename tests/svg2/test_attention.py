import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from svg2.attention import block_sparse_attention, dense_attention
from svg2.blocks import BlockMap
from svg2.methods import build_method
from svg2.methods.static import tile_labels
from svg2.permute import permutation_from_labels
from svg2.plan import execute_plan
from svg2.reference import block_masked_attention
from svg2.timing import StageTimer


def qkv(b, h, s, d, dtype=torch.float32):
    return [torch.randn(b, h, s, d, dtype=dtype) for _ in range(3)]


def rel_err(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def plan_of(method, q, k, v, grid=None):
    """The plan a method makes for this call, with the labels that put each token in its cluster."""
    plan = method.plan(q, k, v, method.state.layer(0, 0), grid, StageTimer(q.device, enabled=False))
    b, h, s, _ = q.shape
    qc, kc = plan.block_map.keep.shape[-2:]

    def labels(perm, sizes):
        if perm is None:  # identity order: labels are run indices
            return torch.repeat_interleave(torch.arange(sizes.shape[-1]), sizes[0]).expand(b * h, s)
        run = torch.repeat_interleave(torch.arange(sizes.shape[-1]).expand(b * h, -1).reshape(-1),
                                      sizes.reshape(-1)).reshape(b * h, s)
        return run.gather(1, perm.inverse)
    ql = labels(plan.q_perm, plan.block_map.row_sizes.reshape(b * h, qc)).reshape(b, h, s)
    kl = labels(plan.k_perm, plan.block_map.col_sizes.reshape(b * h, kc)).reshape(b, h, s)
    return plan, ql, kl


@pytest.mark.parametrize("name, cfg", [
    ("svg2", dict(num_q_clusters=9, num_k_clusters=13, top_p=0.7, kmeans_iters_first=3)),
    ("svg2", dict(num_q_clusters=5, num_k_clusters=21, top_p=None, top_k=4, kmeans_iters_first=3)),
    ("svg2", dict(num_q_clusters=5, num_k_clusters=13, top_p=0.7, kmeans_iters_first=3, align_q_tile=8)),
    ("positional", dict(block_size=16, top_p=0.6)),
    ("positional", dict(tile=(2, 3, 3), top_p=0.6)),
])
def test_permute_attend_unpermute_equals_masked_reference(name, cfg):
    q, k, v = qkv(2, 3, 4 * 5 * 6, 32)  # S = 120, not a multiple of the blocks
    method = build_method(name, **cfg)
    grid = (4, 5, 6)
    plan, ql, kl = plan_of(method, q, k, v, grid)
    out = execute_plan(q, k, v, plan, StageTimer(q.device, enabled=False))
    ref = block_masked_attention(q, k, v, plan.block_map.keep, ql, kl)
    assert rel_err(out, ref) < 1e-5
    assert 0 < float(plan.block_map.density().mean()) < 1
    # the method call returns the same thing and records the same density
    method.reset()
    got = method(q, k, v, grid=grid)
    assert rel_err(got, ref) < 1e-5
    assert abs(method.stats[-1].as_row()["density"] - float(plan.block_map.density().mean())) < 1e-12


def test_top_p_one_equals_dense():
    q, k, v = qkv(2, 4, 301, 64)
    ref = F.scaled_dot_product_attention(q, k, v)
    for name, cfg in [("svg2", dict(num_q_clusters=17, num_k_clusters=40, top_p=1.0, kmeans_iters_first=2)),
                      ("positional", dict(block_size=64, top_p=1.0)),
                      ("positional", dict(block_size=50, top_p=None, top_k=7))]:  # 7 blocks: every one kept
        method = build_method(name, **cfg)
        out = method(q, k, v)
        assert method.stats[-1].as_row()["density"] == 1.0
        assert rel_err(out, ref) < 1e-5, (name, cfg)


def test_tiles_cover_the_grid_with_smaller_edge_tiles():
    labels, num = tile_labels((4, 5, 6), (2, 3, 3))
    assert num == 2 * 2 * 2
    sizes = torch.bincount(labels, minlength=num).reshape(2, 2, 2)
    assert sizes[:, 0, :].eq(2 * 3 * 3).all() and sizes[:, 1, :].eq(2 * 2 * 3).all()


def test_rows_with_no_kept_keys_output_zero():
    q, k, v = qkv(1, 1, 10, 8)
    keep = torch.tensor([[True, False], [False, False]])[None, None]
    sizes = torch.tensor([[[4, 6]]])
    out = block_sparse_attention(q, k, v, BlockMap(keep, sizes, sizes))
    assert torch.equal(out[0, 0, 4:], torch.zeros(6, 8))
    torch.testing.assert_close(out[0, 0, :4], F.scaled_dot_product_attention(q[..., :4, :], k[..., :4, :], v[..., :4, :])[0, 0])


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 2), h=st.integers(1, 3), s=st.integers(3, 97), d=st.sampled_from([64, 128]),
    qc_frac=st.floats(0.05, 1.0), kc_frac=st.floats(0.05, 1.0), top_p=st.floats(0.05, 1.0),
    min_kc_ratio=st.sampled_from([0.0, 0.1, 0.5]), seed=st.integers(0, 2**31 - 1),
)
def test_svg2_matches_masked_reference_over_shapes(b, h, s, d, qc_frac, kc_frac, top_p, min_kc_ratio, seed):
    torch.manual_seed(seed)
    q, k, v = qkv(b, h, s, d)
    qc, kc = max(1, round(qc_frac * s)), max(1, round(kc_frac * s))  # QC/KC up to S
    method = build_method("svg2", num_q_clusters=qc, num_k_clusters=kc, top_p=top_p, min_kc_ratio=min_kc_ratio,
                          kmeans_iters_first=2, seed=seed % 1000)
    plan, ql, kl = plan_of(method, q, k, v)
    out = execute_plan(q, k, v, plan, StageTimer(q.device, enabled=False))
    ref = block_masked_attention(q, k, v, plan.block_map.keep, ql, kl)
    assert rel_err(out, ref) < 1e-5
    kept = plan.block_map.keep.sum(-1)
    assert (kept >= max(1, int(min_kc_ratio * kc))).all()
    assert plan.block_map.row_sizes.sum(-1).eq(s).all() and plan.block_map.col_sizes.sum(-1).eq(s).all()


def test_half_precision_inputs_keep_their_dtype():
    q, k, v = qkv(1, 2, 64, 64, dtype=torch.bfloat16)
    out = build_method("svg2", num_q_clusters=4, num_k_clusters=8, top_p=1.0, kmeans_iters_first=2)(q, k, v)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, F.scaled_dot_product_attention(q.float(), k.float(), v.float())) < 2e-2


def test_dense_attention_rejects_unknown_backend():
    q, k, v = qkv(1, 1, 8, 8)
    assert torch.equal(dense_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    with pytest.raises(ValueError, match="backend='fast'"):
        dense_attention(q, k, v, backend="fast")


def test_queries_in_the_original_order_on_the_torch_path():
    # The op reads q and writes the output through the query permutation on both paths (the Triton kernel
    # does it inside; the torch path permutes and un-permutes around its loop).
    q, k, v = qkv(1, 2, 30, 16)
    labels = torch.randint(0, 4, (2, 30))
    perm = permutation_from_labels(labels, 4)
    keep = torch.rand(1, 2, 4, 3) < 0.6
    col = torch.tensor([[[10, 15, 5], [1, 20, 9]]])
    bm = BlockMap(keep, perm.sizes.reshape(1, 2, 4), col)
    qp = q.reshape(2, 30, 16).gather(1, perm.order[..., None].expand(2, 30, 16)).reshape(1, 2, 30, 16)
    permuted = block_sparse_attention(qp, k, v, bm)
    expected = permuted.reshape(2, 30, 16).gather(1, perm.inverse[..., None].expand(2, 30, 16)).reshape(1, 2, 30, 16)
    assert torch.equal(block_sparse_attention(q, k, v, bm, q_perm=perm), expected)
