"""Tiny random pipelines of every supported model, saved and loaded back as a user would, with sparse
attention installed into them."""
import pytest
import torch

from svg2.diffusers import SparseProcessor, apply, expected_files, load_pipeline, remove, transformer_spec
from svg2.methods import build_method

from tinypipes import KINDS, generate

TINY_SVG2 = dict(num_q_clusters=4, num_k_clusters=8, kmeans_iters_first=3, kmeans_iters_step=1)


@pytest.fixture(scope="module")
def stock(tiny):
    """kind -> stock output of a 2-step generation (no sparse attention installed)."""
    return {kind: generate(tiny(kind), kind) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method,config", [("dense", {}), ("svg2", dict(TINY_SVG2, top_p=1.0))],
                         ids=["dense", "svg2_top_p_1"])
def test_full_density_reproduces_stock_processor(tiny, stock, kind, method, config):
    pipe = tiny(kind)
    m = build_method(method, **config)
    apply(pipe, m)
    try:
        out = generate(pipe, kind)
    finally:
        remove(pipe)
    assert out.shape == stock[kind].shape and out.shape[1] == 9  # (B, frames, C, H, W)
    torch.testing.assert_close(out, stock[kind], atol=1e-4, rtol=0)
    layers = len(transformer_spec(pipe.transformer).self_attention(pipe.transformer))
    branches = 2 if kind.startswith("wan") else 1  # Wan runs CFG as two calls; the others one
    assert len(m.stats) == 2 * layers * branches
    assert all(s.as_row()["density"] == pytest.approx(1.0) for s in m.stats if kind != "hunyuan")


@pytest.mark.parametrize("kind", KINDS)
def test_sparse_changes_output_and_remove_restores(tiny, stock, kind):
    pipe = tiny(kind)
    attn = transformer_spec(pipe.transformer).self_attention(pipe.transformer)
    originals = [a.processor for a in attn]
    m = build_method("svg2", **TINY_SVG2, top_p=0.3, min_kc_ratio=0.0)
    apply(pipe, m)
    assert all(isinstance(a.processor, SparseProcessor) for a in attn)
    out = generate(pipe, kind)
    remove(pipe)
    assert [a.processor for a in attn] == originals
    assert not {"step", "set_timesteps"} & set(vars(pipe.scheduler))  # scheduler hooks gone too
    assert torch.isfinite(out).all()
    assert (out - stock[kind]).abs().max() > 1e-3  # the sparse path really ran
    assert max(s.as_row()["density"] for s in m.stats) < 1.0
    torch.testing.assert_close(generate(pipe, kind), stock[kind], atol=1e-5, rtol=0)


def test_state_resets_between_generations(tiny):
    pipe = tiny("wan_t2v")
    m = build_method("svg2", **TINY_SVG2, top_p=0.5)
    apply(pipe, m)
    try:
        first = generate(pipe, "wan_t2v")
        first_stats = [s.as_row() for s in m.stats]
        second = generate(pipe, "wan_t2v")
    finally:
        remove(pipe)
    # Leaked centroids would warm-start the second generation and change its output.
    torch.testing.assert_close(second, first, atol=0, rtol=0)
    rows = [s.as_row() for s in m.stats]
    assert [(r["step"], r["layer"], r["branch"], r["kmeans_iters"]) for r in rows] == \
           [(r["step"], r["layer"], r["branch"], r["kmeans_iters"]) for r in first_stats]
    assert m.state.num_steps == 2


def test_cfg_branches_keep_separate_state(tiny):
    pipe = tiny("wan_t2v")
    m = build_method("svg2", **TINY_SVG2, top_p=0.5)
    apply(pipe, m)
    try:
        generate(pipe, "wan_t2v", steps=3)
    finally:
        remove(pipe)
    assert sorted(m.state.layers) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    rows = [s.as_row() for s in m.stats]
    # Every branch starts cold at step 0 and is warm-started from its own cache afterwards.
    assert [(r["step"], r["branch"], r["layer"]) for r in rows] == \
           [(step, branch, layer) for step in range(3) for branch in range(2) for layer in range(2)]
    assert all(r["kmeans_iters"] == (3 if r["step"] == 0 else 1) for r in rows)
    cond, uncond = m.state.layers[(1, 0)].k_centroids, m.state.layers[(1, 1)].k_centroids
    assert not torch.equal(cond, uncond)


@pytest.mark.parametrize("dense_steps,dense_layers,expected", [
    (1, 0, lambda step, layer: step < 1),
    (0, 1, lambda step, layer: layer < 1),
    (0.5, 0, lambda step, layer: step < 2),  # half of the 4 steps the pipeline announces
])
def test_dense_warmup_by_step_and_layer(tiny, dense_steps, dense_layers, expected):
    pipe = tiny("hunyuan")
    m = build_method("svg2", **TINY_SVG2, top_p=0.5, dense_steps=dense_steps, dense_layers=dense_layers)
    apply(pipe, m)
    try:
        generate(pipe, "hunyuan", steps=4)
    finally:
        remove(pipe)
    rows = [s.as_row() for s in m.stats]
    assert sorted({r["step"] for r in rows}) == [0, 1, 2, 3]
    assert all(r["ran_dense"] == expected(r["step"], r["layer"]) for r in rows)
    assert all((r["density"] == 1.0) == r["ran_dense"] for r in rows)


@pytest.mark.parametrize("kind", KINDS)
def test_latent_grid_reaches_the_method(tiny, kind):
    """Every model passes its latent token grid (frames, h, w): 9 frames -> 3 latent frames, 4 x 4 tokens."""
    pipe = tiny(kind)
    m = build_method("positional", tile=(1, 4, 4), top_p=0.5)
    grids, plan = [], m.plan
    m.plan = lambda q, k, v, state, grid, timer: grids.append(grid) or plan(q, k, v, state, grid, timer)
    apply(pipe, m)
    try:
        generate(pipe, kind, steps=1)
    finally:
        remove(pipe)
    assert grids and set(grids) == {(3, 4, 4)}


def test_apply_rejects_bad_input(tiny):
    pipe = tiny("wan_t2v")
    with pytest.raises(TypeError, match="AttentionMethod"):
        apply(pipe, "svg2")
    apply(pipe, build_method("dense"))
    try:
        with pytest.raises(RuntimeError, match="already has sparse attention"):
            apply(pipe, build_method("dense"))
    finally:
        remove(pipe)
    with pytest.raises(ValueError, match="not supported"):
        apply(torch.nn.Linear(2, 2), build_method("dense"))


def test_missing_or_wrong_path_names_expected_files(tiny, tiny_dirs, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_pipeline("wan_t2v", tmp_path / "nope")
    assert all(f in str(err.value) for f in expected_files("wan_t2v"))
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="lacks transformer/config.json"):
        load_pipeline("wan_t2v", tmp_path)
    tiny("cogvideox")
    with pytest.raises(ValueError, match="holds a CogVideoXPipeline"):
        load_pipeline("wan_t2v", tiny_dirs["cogvideox"])
    with pytest.raises(ValueError, match="kind='sora'"):
        load_pipeline("sora", tmp_path)
