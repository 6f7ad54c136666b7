
import pytest
import torch

from eval.default_model.components import SHIPPED_MODEL, TINY, load_model_config
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


def test_shipped_model_loads_through_the_project_loader_and_fits_the_size_budget():
    from svg2.diffusers import load_pipeline as load

    size = sum(f.stat().st_size for f in SHIPPED_MODEL.rglob("*") if f.is_file())
    assert size <= 20 * 2 ** 20, f"shipped model is {size / 2 ** 20:.1f} MiB; the budget is 20"
    cfg = load_model_config(SHIPPED_MODEL)
    assert cfg.tokens >= 2048
    pipe = load("wan_t2v", SHIPPED_MODEL)
    assert pipe.transformer.config.num_layers == cfg.num_layers
    assert pipe.vae.config.scale_factor_spatial * pipe.transformer.config.patch_size[1] * 16 == cfg.height
