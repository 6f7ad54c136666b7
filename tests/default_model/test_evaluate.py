import math

import pandas as pd
import pytest
import torch

from eval.default_model.attention_error import Recorder, at_equal_density, record
from eval.default_model.components import SHIPPED_MODEL, TINY, load_model_config
from eval.metrics.attention import relative_l2
from eval.default_model.evaluate import generate, load_pipeline, prompt_following


def test_generate_is_seeded_and_scored(tiny_run):
    _, model_dir = tiny_run
    pipe = load_pipeline(model_dir)
    a, prompts = generate(pipe, [5, 6], steps=2)
    b, _ = generate(pipe, [5, 6], steps=2)
    assert a.shape == (2, TINY.frames, TINY.height, TINY.width, 3) and torch.equal(a, b)
    assert 0 <= a.min() and a.max() <= 1 and len(set(prompts)) == 2
    summary = prompt_following(pipe, [5, 6], guidance=2.0, steps=2)
    assert summary["clips"] == 2 and 0 <= summary["both_acc"] <= 1 and summary["both_chance"] == pytest.approx(1 / 24)


def test_recorder_keeps_self_attention_inputs_of_every_layer(tiny_run):
    _, model_dir = tiny_run
    calls = record(model_dir, seed=1, steps=(1,))
    cfg = load_model_config(model_dir)
    assert sorted(calls) == [(1, layer, 0) for layer in range(cfg.num_layers)]
    q, k, v, grid = calls[(1, 0, 0)]
    assert grid == (cfg.frames, cfg.height // 4, cfg.width // 4)
    assert q.shape == (1, cfg.num_heads, math.prod(grid), cfg.head_dim) and k.shape == v.shape == q.shape
    out = Recorder(steps=())(q, k, v)
    assert relative_l2(torch.nn.functional.scaled_dot_product_attention(q, k, v), out) < 1e-5


def test_equal_density_interpolates_in_log_density():
    df = pd.DataFrame(dict(method=["a"] * 2 + ["b"] * 2, top_p=[0.5, 0.9] * 2,
                           density=[0.1, 0.4, 0.2, 0.8], rel_l2=[0.4, 0.2, 0.3, 0.1]))
    table = at_equal_density(df, densities=(0.2, 0.5))
    assert table.loc[0.2, "a"] == pytest.approx(0.3) and table.loc[0.2, "b"] == pytest.approx(0.3)
    assert math.isnan(table.loc[0.5, "a"]) and 0.1 < table.loc[0.5, "b"] < 0.3


def test_shipped_model_loads_through_the_project_loader_and_fits_the_size_budget():
    from svg2.diffusers import load_pipeline as load

    size = sum(f.stat().st_size for f in SHIPPED_MODEL.rglob("*") if f.is_file())
    assert size <= 20 * 2 ** 20, f"shipped model is {size / 2 ** 20:.1f} MiB; the budget is 20"
    cfg = load_model_config(SHIPPED_MODEL)
    assert cfg.tokens >= 2048
    pipe = load("wan_t2v", SHIPPED_MODEL)
    assert pipe.transformer.config.num_layers == cfg.num_layers
    assert pipe.vae.config.scale_factor_spatial * pipe.transformer.config.patch_size[1] * 16 == cfg.height
