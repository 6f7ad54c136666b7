"""Whole-pipeline FLOPs of one video generation, counted by ``torch.utils.flop_counter.FlopCounterMode`` on
modules built on the meta device (no weights, no compute) from the committed public configurations
(``eval/model_configs/<repo>/``): the transformer per call, the text encoder(s) per prompt, the image encoder
per conditioning image, the VAE encoder per conditioning video and the VAE decoder per video.

The transformer's self-attention core (the two matmuls over the attention pairs) is left out of the count and
added analytically at the call's density (``eval.metrics.flops.layer_flops``): the sparse path runs in Triton
kernels the counter cannot see, and a dense count would not know the density anyway. Everything else the
counter sees is counted as it runs: projections, MLPs, cross-attention, embeddings, the prompt refiner.

What one pipeline call runs, as diffusers' pipelines do with their default arguments:

- every pipeline: one text-encoder pass per CFG branch (the negative prompt is the second), one VAE decode;
- Wan (T2V and I2V): UMT5 over 512 tokens (the prompt padded to ``max_sequence_length``);
- Wan I2V: CLIP ViT-H/14 once on the conditioning image (at its ``image_size``), and the VAE encodes the
  conditioning video (the image then zeros, every frame);
- HunyuanVideo: Llama over 256 + 95 tokens (the prompt template's 95 are cropped after encoding) and CLIP-L
  over 77; guidance-distilled, so one prompt; the VAE decodes untiled (the harness does not enable tiling);
- CogVideoX: T5-XXL over 226 tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from eval.metrics.flops import attention_core, layer_flops, measured_attention_flops, measured_core
from eval.shapes import CONFIGS, ModelShape, build_transformer, latent_size, load_config, transformer_inputs
from svg2.diffusers import apply, remove
from svg2.methods import DenseMethod

# Tokens of one text-encoder pass, per pipeline class and encoder component (see the module docstring).
TEXT_TOKENS = {
    "WanPipeline": {"text_encoder": 512},
    "WanImageToVideoPipeline": {"text_encoder": 512},
    "HunyuanVideoPipeline": {"text_encoder": 256 + 95, "text_encoder_2": 77},
    "CogVideoXPipeline": {"text_encoder": 226},
}
ENCODES_VIDEO = {"WanImageToVideoPipeline"}  # the VAE encodes a conditioning video


def count_flops(fn) -> int:
    """FLOPs torch's counter sees while ``fn()`` runs (a multiply-add is 2)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def on_meta(module: torch.nn.Module) -> torch.nn.Module:
    """An empty copy of a diffusers or transformers module on the meta device (same configuration)."""
    with torch.device("meta"):
        if hasattr(module.config, "to_dict"):  # transformers' PretrainedConfig
            return type(module)(module.config).eval()
        return type(module).from_config(module.config).eval()


def build_component(folder: str, name: str) -> torch.nn.Module:
    """Component ``name`` of a committed configuration folder, on the meta device."""
    library, cls = load_config(folder, "model_index")[name]
    config = {k: v for k, v in load_config(folder, name).items() if not k.startswith("_") and k != "architectures"}
    with torch.device("meta"):
        if library == "transformers":
            import transformers

            return getattr(transformers, cls)(transformers.AutoConfig.for_model(config.pop("model_type"), **config))
        import diffusers

        return getattr(diffusers, cls)(**config).eval()


class SkipSelfAttention(DenseMethod):
    """Stands in for the self-attention core while counting: an output of the right shape, zero FLOPs."""

    def __call__(self, q, k, v, **call):
        return torch.empty_like(q)


def transformer_call_flops(shape: ModelShape, model: torch.nn.Module | None = None) -> int:
    """Counted FLOPs of one transformer forward (batch 1, one CFG branch) without its self-attention core."""
    model = model if model is not None else build_transformer(shape, "meta")
    inputs = transformer_inputs(shape, "meta", next(model.parameters()).dtype)
    apply(model, SkipSelfAttention())
    try:
        return count_flops(lambda: model(**inputs, return_dict=False))
    finally:
        remove(model)


def text_encoder_flops(encoder: torch.nn.Module, tokens: int) -> int:
    """One prompt pass; the attention mask is left out (it changes no matmul's size)."""
    ids = torch.zeros(1, tokens, dtype=torch.long, device="meta")
    return count_flops(lambda: encoder(ids))


def image_encoder_flops(encoder: torch.nn.Module) -> int:
    side = encoder.config.image_size
    pixels = torch.empty(1, encoder.config.num_channels, side, side, device="meta")
    return count_flops(lambda: encoder(pixels, output_hidden_states=True))


def vae_flops(vae: torch.nn.Module, shape: ModelShape, encode: bool) -> dict[str, int]:
    """VAE decode of the generated video, and (``encode``) encode of a conditioning video of the same size."""
    channels = vae.config.latent_channels if "latent_channels" in vae.config else vae.config.z_dim
    latent = torch.empty(1, channels, *latent_size(*shape.video), device="meta")
    out = {"vae_decode": count_flops(lambda: vae.decode(latent))}
    if encode:
        video = torch.empty(1, vae.config.in_channels, *shape.video, device="meta")
        out["vae_encode"] = count_flops(lambda: vae.encode(video))
    return out


@dataclass(frozen=True)
class PipelineCount:
    """Counted FLOPs of one generation's parts: per transformer call (self-attention core excluded) and per video."""
    transformer_call: int
    per_video: dict[str, int] = field(default_factory=dict)  # part -> FLOPs over the whole generation

    def video_flops(self) -> int:
        return sum(self.per_video.values())


def count_pipeline(shape: ModelShape, pipeline: str, components: dict[str, torch.nn.Module],
                   text_tokens: dict[str, int] | None = None) -> PipelineCount:
    """The counted parts of a ``pipeline`` (diffusers class name) generation of ``shape`` from meta modules."""
    if pipeline not in TEXT_TOKENS:
        raise ValueError(f"pipeline {pipeline!r}; expected one of {sorted(TEXT_TOKENS)}")
    tokens = text_tokens or TEXT_TOKENS[pipeline]
    per_video = {}
    for name, n in tokens.items():  # one pass per CFG branch: the prompt, then the negative prompt
        per_video[name] = shape.cfg_branches * text_encoder_flops(components[name], n)
    if "image_encoder" in components:
        per_video["image_encoder"] = image_encoder_flops(components["image_encoder"])
    per_video.update(vae_flops(components["vae"], shape, encode=pipeline in ENCODES_VIDEO))
    return PipelineCount(transformer_call_flops(shape, components.get("transformer")), per_video)


@lru_cache(maxsize=None)
def committed_count(shape: ModelShape) -> PipelineCount:
    """``count_pipeline`` from the shape's committed public configurations (cached per process)."""
    if shape.configs is None:
        raise ValueError(f"shape {shape.name!r} has no committed configurations; expected a shape of eval.shapes")
    index = load_config(shape.configs, "model_index")
    committed = {p.stem for p in (CONFIGS / shape.configs).glob("*.json")}  # the modules that compute
    components = {n: build_component(shape.configs, n) for n in index if n in committed - {"transformer"}}
    return count_pipeline(shape, index["_class_name"], components)


def pipeline_account(shape: ModelShape, density: float = 1.0, dense_steps: float = 0, dense_layers: int = 0,
                     count: PipelineCount | None = None) -> dict:
    """Whole-pipeline PFLOPs of a generation (dense and at this configuration) and its parts: the transformer
    (counted, self-attention core analytic at ``density`` for sparse calls), text/image encoders and the VAE."""
    count = count or committed_count(shape)
    _, core = attention_core(shape, density, dense_steps, dense_layers)
    forwards = shape.steps * shape.cfg_branches
    rest = forwards * count.transformer_call + count.video_flops()
    total_dense = shape.attention_calls * layer_flops(shape, 1.0)[0] + rest
    total = core + rest
    parts = {"transformer": (total - count.video_flops()) / 1e15, **{k: v / 1e15 for k, v in count.per_video.items()}}
    return dict(pflops=total / 1e15, pflops_dense=total_dense / 1e15, flops_ratio=total / total_dense,
                parts_pflops=parts)


def pipeline_flops_from_stats(shape: ModelShape, densities: list[float], count: PipelineCount | None = None) -> dict:
    """Whole-pipeline FLOPs of a measured generation: the self-attention core at each call's density as the method
    reports it (dense calls 1.0), the rest of the transformer and the encoders/VAE counted (``count``, or the
    shape's committed configurations)."""
    count = count or committed_count(shape)
    rest = len(densities) / shape.layers * count.transformer_call + count.video_flops()  # per forward, per video
    total = measured_core(shape, densities) + rest
    dense = len(densities) * measured_attention_flops(shape, 1.0) + rest
    return dict(flops_pipeline=total, flops_pipeline_dense=dense, flops_pipeline_ratio=total / dense)
