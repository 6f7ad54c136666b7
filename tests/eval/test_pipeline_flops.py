"""The whole-pipeline count: per-call and per-video parts assembled as a pipeline runs them."""
import dataclasses

import pytest
import torch

from eval.metrics.flops import flops_account
from eval.metrics.pipeline_flops import TEXT_TOKENS, committed_count, count_pipeline, on_meta, pipeline_account
from eval.shapes import SHAPES, from_transformer
from svg2.diffusers import build_tiny_pipeline, load_pipeline
from svg2.diffusers import model_spec

STEPS = 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wan_t2v", "wan_i2v", "hunyuan", "cogvideox"])
def test_account_equals_the_counter_over_a_real_tiny_generation(kind, tmp_path):
    """Run a tiny pipeline under the counter (math SDPA: the counter does not see the CPU flash kernel) and
    rebuild the same total from the parts: transformer per call, encoders per prompt, VAE per video."""
    from PIL import Image
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    pipe = load_pipeline(kind, build_tiny_pipeline(kind, tmp_path / kind))
    call = dict(model_spec(kind).tiny_call, num_inference_steps=STEPS, output_type="np")
    if kind == "wan_i2v":
        call["image"] = Image.new("RGB", (call["width"], call["height"]))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        pipe(prompt="a red square moves left", **call)

    config = {**pipe.transformer.config, "_class_name": type(pipe.transformer).__name__}
    prompt_tokens = call.get("max_sequence_length", 512)
    image = getattr(pipe, "image_encoder", None)  # CLIP's patch tokens plus its class token
    shape = from_transformer(kind, config, (9, call["height"], call["width"]), prompt_tokens, steps=STEPS,
                             cfg_branches=1 if kind == "hunyuan" else 2,
                             image_tokens=(image.config.image_size // image.config.patch_size) ** 2 + 1 if image else 0)
    tokens = dict(TEXT_TOKENS[type(pipe).__name__])
    if kind in ("hunyuan", "cogvideox"):  # the tiny call's shorter prompt, no template
        tokens["text_encoder"] = prompt_tokens
    parts = {name: on_meta(m) for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    count = count_pipeline(shape, type(pipe).__name__, parts, tokens)
    assert pipeline_account(shape, count=count)["pflops_dense"] * 1e15 == pytest.approx(counter.get_total_flops(),
                                                                                         rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_counted_transformer_agrees_with_the_formula_at_real_shapes(name):
    """The counter and the analytic formula agree on each real transformer within its embeddings (< 0.05%)."""
    shape = SHAPES[name]
    whole = pipeline_account(shape)
    assert whole["parts_pflops"]["transformer"] == pytest.approx(flops_account(shape)["pflops_dense"], rel=5e-4)
    assert 0 < whole["pflops_dense"] - whole["parts_pflops"]["transformer"] < 0.01 * whole["pflops_dense"]
    sparse = pipeline_account(shape, 0.2, dense_steps=0.3)
    assert sparse["pflops"] < whole["pflops_dense"] and sparse["pflops_dense"] == whole["pflops_dense"]


def test_a_shape_without_configurations_is_an_error():
    bare = dataclasses.replace(SHAPES["wan_t2v_14b_720p"], name="bare", configs=None)
    with pytest.raises(ValueError, match="no committed configurations"):
        committed_count(bare)
    with pytest.raises(ValueError, match="WanPipeline"):
        count_pipeline(SHAPES["wan_t2v_14b_720p"], "StableDiffusionPipeline", {})
