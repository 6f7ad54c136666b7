import pytest
import torch

from svg2.methods import SVG2_PRESETS, build_method, svg2_preset
from tests.svg2.test_attention import plan_of


def qkv(b=1, h=2, s=96, d=16):
    return [torch.randn(b, h, s, d) for _ in range(3)]


SMALL = dict(num_q_clusters=6, num_k_clusters=10, kmeans_iters_first=5, kmeans_iters_step=2)


def test_first_call_clusters_from_scratch_later_calls_warm_start_per_layer_and_branch():
    m = build_method("svg2", **SMALL)
    q, k, v = qkv()
    m(q, k, v, layer=0, branch=0)
    m(q, k, v, layer=0, branch=0)
    m(q, k, v, layer=0, branch=1)  # the unconditional CFG pass has its own caches
    m(q, k, v, layer=3, branch=0)
    assert [s.kmeans_iters for s in m.stats] == [5, 2, 5, 5]
    assert set(m.state.layers) == {(0, 0), (0, 1), (3, 0)}
    m.reset()
    assert m.state.layers == {} and m.stats == []
    m(q, k, v, layer=0, branch=0)
    assert m.stats[-1].kmeans_iters == 5


def test_warm_start_on_the_same_inputs_matches_more_iterations_from_scratch():
    q, k, v = qkv()
    warm = build_method("svg2", **SMALL)
    warm(q, k, v)
    out_warm = warm(q, k, v)  # 5 + 2 iterations
    cold = build_method("svg2", **{**SMALL, "kmeans_iters_first": 7})
    torch.testing.assert_close(out_warm, cold(q, k, v))


def test_dense_warm_up_by_step_count_fraction_and_layer():
    q, k, v = qkv()
    m = build_method("svg2", dense_steps=2, dense_layers=1, **SMALL)
    for step in range(4):
        for layer in range(2):
            m(q, k, v, layer=layer, step=step)
    dense = [(s.step, s.layer) for s in m.stats if s.ran_dense]
    assert dense == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (3, 0)]
    assert all(s.as_row()["density"] == 1.0 for s in m.stats if s.ran_dense)
    frac = build_method("svg2", dense_steps=0.25, **SMALL)
    with pytest.raises(ValueError, match="call reset\\(num_steps=...\\) first"):
        frac(q, k, v)
    frac.reset(num_steps=10)
    frac.set_step(2)
    frac(q, k, v)
    frac.set_step(3)
    frac(q, k, v)
    assert [s.ran_dense for s in frac.stats] == [True, False]  # ceil(0.25 * 10) = 3 dense steps


def test_batch_entries_are_independent():
    # Batch > 1 works (upstream asserts batch 1): each entry is clustered and attended on its own, so
    # replacing the other entries' keys and values leaves an entry's output unchanged.
    q, k, v = qkv(b=3)
    m = build_method("svg2", **SMALL, top_p=0.6)
    together = m(q, k, v)
    for i in range(3):
        others = [j for j in range(3) if j != i]
        k2, v2 = k.clone(), v.clone()
        k2[others], v2[others] = torch.randn_like(k2[others]), torch.randn_like(v2[others])
        m.reset()
        torch.testing.assert_close(m(q, k2, v2)[i], together[i])


def test_stats_rows_carry_stage_times_and_density():
    m = build_method("svg2", **SMALL)
    m(*qkv(), layer=2, branch=1, step=7)
    row = m.stats[-1].as_row()
    assert row["method"] == "svg2" and row["layer"] == 2 and row["branch"] == 1 and row["step"] == 7
    assert 0 < row["density"] <= 1
    assert {"ms_cluster", "ms_permute", "ms_select", "ms_attend"} <= set(row)


def test_tile_alignment_moves_few_queries_and_keeps_the_selection():
    # align_q_tile: query clusters sized in multiples of the tile, same centroids (so the same kept key
    # clusters and the same warm start), a few boundary queries moved; key side untouched.
    q, k, v = qkv(1, 2, 400, 16)
    cfg = dict(num_q_clusters=12, num_k_clusters=10, kmeans_iters_first=5, top_p=0.8)
    plain, aligned = build_method("svg2", **cfg), build_method("svg2", **cfg, align_q_tile=16)
    a, b = (plan_of(m, q, k, v) for m in (plain, aligned))
    assert torch.equal(a[0].block_map.keep, b[0].block_map.keep)
    assert torch.equal(a[0].k_perm.order, b[0].k_perm.order)
    for key in ("q_centroids", "k_centroids"):
        assert torch.equal(getattr(plain.state.layer(0, 0), key), getattr(aligned.state.layer(0, 0), key))
    partial = lambda sizes: int(((-sizes) % 16).sum())  # noqa: E731
    assert partial(b[0].block_map.row_sizes) < 0.3 * partial(a[0].block_map.row_sizes)
    moved = (a[1] != b[1]).double().mean()
    assert 0 < moved < 0.25


def test_presets_carry_the_upstream_settings():
    assert set(SVG2_PRESETS) == {"wan_t2v_14b_720p", "wan_i2v_14b_720p", "wan_t2v_1.3b_480p", "hunyuan_720p"}
    c = svg2_preset("wan_t2v_14b_720p")
    assert (c.num_q_clusters, c.num_k_clusters, c.top_p, c.min_kc_ratio) == (300, 1000, 0.9, 0.1)
    assert (c.kmeans_iters_first, c.kmeans_iters_step) == (50, 2)
    assert svg2_preset("hunyuan_720p").num_q_clusters == 400 and svg2_preset("wan_t2v_1.3b_480p").num_q_clusters == 200
    assert svg2_preset("wan_t2v_1.3b_480p", top_p=0.95).top_p == 0.95
    with pytest.raises(ValueError, match="preset='sd3'"):
        svg2_preset("sd3")


@pytest.mark.parametrize("make, match", [
    (lambda: (torch.randn(2, 8, 4),) * 3, r"q has 3 dims .*expected \(B, H, S, D\)"),
    (lambda: (torch.randn(1, 2, 8, 4), torch.randn(1, 2, 9, 4), torch.randn(1, 2, 8, 4)), "shapes differ"),
    (lambda: (torch.randn(1, 2, 8, 4), torch.randn(1, 2, 8, 4).double(), torch.randn(1, 2, 8, 4)), "dtypes differ"),
    (lambda: (torch.randn(1, 2, 8, 4, device="meta"), torch.randn(1, 2, 8, 4), torch.randn(1, 2, 8, 4)),
     "devices differ"),
    (lambda: (torch.randint(0, 3, (1, 2, 8, 4)),) * 3, "expected a floating-point dtype"),
])
def test_bad_tensors_are_named(make, match):
    m = build_method("svg2", num_q_clusters=2, num_k_clusters=2)
    with pytest.raises((ValueError, TypeError), match=match):
        m(*make())


def test_too_many_clusters_and_non_finite_inputs_are_named():
    q, k, v = qkv(s=50)
    with pytest.raises(ValueError, match="num_q_clusters=60 exceeds the sequence length S=50"):
        build_method("svg2", num_q_clusters=60, num_k_clusters=10)(q, k, v)
    with pytest.raises(ValueError, match="num_k_clusters=51 exceeds"):
        build_method("svg2", num_q_clusters=5, num_k_clusters=51)(q, k, v)
    k[0, 1, 3, 2] = float("nan")
    with pytest.raises(ValueError, match="k has 1 non-finite values"):
        build_method("svg2", num_q_clusters=5, num_k_clusters=10)(q, k, v)


@pytest.mark.parametrize("name, cfg, match", [
    ("svg2", dict(top_p=0.0), r"top_p=0.0 is outside \(0, 1\]"),
    ("svg2", dict(top_p=1.2), r"top_p=1.2 is outside \(0, 1\]"),
    ("svg2", dict(top_p=None), "set exactly one budget"),
    ("svg2", dict(min_kc_ratio=2.0), r"min_kc_ratio=2.0 is outside \[0, 1\]"),
    ("svg2", dict(kmeans_iters_step=-1), "kmeans_iters_step=-1"),
    ("svg2", dict(kmeans_init="first"), "kmeans_init='first'"),
    ("svg2", dict(align_q_tile=-64), "align_q_tile=-64"),
    ("svg2", dict(bogus=1), r"unknown svg2 config fields \['bogus'\]"),
    ("positional", dict(block_size=0), "block_size=0"),
    ("positional", dict(tile=(2, 2)), "tile=\\(2, 2\\)"),
    ("nope", dict(), r"method='nope'; expected one of \[.*'dense'.*'positional'.*'svg2'.*\]"),
    ("dense", dict(dense_layers=-1), "dense_layers=-1"),
])
def test_bad_config_is_named(name, cfg, match):
    with pytest.raises(ValueError, match=match):
        build_method(name, **cfg)


def test_positional_tiles_need_the_grid():
    q, k, v = qkv(s=60)
    m = build_method("positional", tile=(1, 2, 2))
    with pytest.raises(ValueError, match="needs the latent grid"):
        m(q, k, v)
    with pytest.raises(ValueError, match=r"grid=\(2, 5, 5\) has 50 tokens; q has S=60"):
        m(q, k, v, grid=(2, 5, 5))
    assert m(q, k, v, grid=(3, 4, 5)).shape == q.shape


def test_dense_rounding_floor_is_the_references_threshold():
    q, k, v = qkv()
    for rounding, dense in (("ceil", [True, True, True, False]), ("floor", [True, True, False, False])):
        m = build_method("svg2", dense_steps=0.25, dense_rounding=rounding, **SMALL)
        m.reset(num_steps=10)  # 2.5 steps: ceil 3, floor 2
        for step in range(4):
            m.set_step(step)
            m(q, k, v)
        assert [s.ran_dense for s in m.stats] == dense


def test_shared_cfg_state_warm_starts_the_second_branch_from_the_first():
    q, k, v = qkv()
    own = build_method("svg2", **SMALL)
    shared = build_method("svg2", share_cfg_state=True, **SMALL)
    for m in (own, shared):
        m(q, k, v, layer=0, branch=0)
        m(q, k, v, layer=0, branch=1)
    assert [s.kmeans_iters for s in own.stats] == [5, 5] and set(own.state.layers) == {(0, 0), (0, 1)}
    assert [s.kmeans_iters for s in shared.stats] == [5, 2] and set(shared.state.layers) == {(0, 0)}


def test_zero_step_kmeans_clusters_during_the_warm_up_so_the_first_sparse_step_is_warm():
    q, k, v = qkv()
    for zero_step, first_sparse in ((False, 5), (True, 2)):
        m = build_method("svg2", dense_steps=2, dense_layers=1, zero_step_kmeans=zero_step, **SMALL)
        for step in range(3):
            for layer in range(2):
                m(q, k, v, layer=layer, step=step)
        iters = {(s.step, s.layer): s.kmeans_iters for s in m.stats}
        assert iters[(2, 1)] == first_sparse
        assert iters[(0, 0)] == 0 and iters[(2, 0)] == 0  # a layer that stays dense never clusters
        assert iters[(0, 1)] == (5 if zero_step else 0) and iters[(1, 1)] == (2 if zero_step else 0)
        assert all(s.ran_dense for s in m.stats if s.step < 2)


def test_input_dtype_centroids_are_rounded_to_it():
    q, k, v = (t.bfloat16() for t in qkv())
    m = build_method("svg2", centroid_dtype="input", **SMALL)
    m(q, k, v)
    c = m.state.layer(0, 0).k_centroids
    assert c.dtype == torch.float32 and torch.equal(c, c.bfloat16().float())
    fp32 = build_method("svg2", **SMALL)
    fp32(q, k, v)
    assert not torch.equal(fp32.state.layer(0, 0).k_centroids.bfloat16().float(), fp32.state.layer(0, 0).k_centroids)


def test_upstream_switch_sets_every_reference_rule():
    c = build_method("svg2", upstream=True, **SMALL).config
    assert (c.dense_rounding, c.share_cfg_state, c.centroid_dtype) == ("floor", True, "input")
    with pytest.raises(ValueError, match="centroid_dtype='bf16'"):
        build_method("svg2", centroid_dtype="bf16")
    with pytest.raises(ValueError, match="dense_rounding='round'"):
        build_method("positional", dense_rounding="round")
