"""The one registry of real video-model shapes: FLOPs, benchmarks and CLIs name a shape by its key here.

An entry is built from the model's public transformer and VAE configurations
(``eval/model_configs/<repo>/{transformer,vae}.json``, their sources named inside) and the generation it describes
(frames, height, width, prompt tokens, CFG branches, steps): layers, heads, head dim, MLP width and the latent token
grid are read off those configurations (the grid as the harness reads it, by the family's ``ModelSpec``), so the
FLOPs account and the random-weight transformer of ``eval.bench.e2e`` cannot disagree.

    from eval.shapes import SHAPES, get_shape
    get_shape("wan_t2v_14b_720p").grid        # (21, 45, 80): 75,600 video tokens
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "model_configs"


@dataclass(frozen=True)
class ModelShape:
    name: str
    layers: int
    heads: int
    head_dim: int
    mlp_dim: int
    video_tokens: int          # N = latent frames · h/patch · w/patch
    text_tokens: int           # L
    joint: bool = False        # text tokens inside the self-attention (HunyuanVideo, CogVideoX)
    image_tokens: int = 0      # Wan I2V: extra cross-attention tokens (CLIP image features)
    cfg_branches: int = 2      # transformer calls per denoising step
    steps: int = 50
    grid: tuple[int, int, int] | None = None   # latent token grid (frames, h, w) when known
    video: tuple[int, int, int] | None = None  # (frames, height, width) of the generated video, pixels
    transformer: str | None = None             # diffusers class the configuration builds
    transformer_config: dict | None = field(default=None, hash=False, repr=False)
    configs: str | None = None                 # folder under eval/model_configs holding the public configs

    @property
    def width(self) -> int:
        return self.heads * self.head_dim

    @property
    def attention_tokens(self) -> int:
        """Tokens of one self-attention call: the video tokens, plus the prompt's in a joint model."""
        return self.video_tokens + (self.text_tokens if self.joint else 0)

    @property
    def attention_calls(self) -> int:
        """Self-attention calls of a generation: one per step, layer and CFG branch."""
        return self.steps * self.layers * self.cfg_branches

    def with_transformer(self, **changes) -> ModelShape:
        """The same generation on a transformer whose configuration differs by ``changes`` (e.g. fewer layers)."""
        if self.transformer_config is None:
            raise ValueError(f"shape {self.name!r} has no transformer configuration to change")
        return from_transformer(self.name, {**self.transformer_config, **changes}, self.video, self.text_tokens,
                                image_tokens=self.image_tokens, cfg_branches=self.cfg_branches, steps=self.steps,
                                configs=self.configs)


def latent_size(frames: int, height: int, width: int, temporal: int = 4, spatial: int = 8) -> tuple[int, int, int]:
    """(frames, h, w) of a causal-VAE latent: the first frame alone, then one latent frame per ``temporal``."""
    return (frames - 1) // temporal + 1, height // spatial, width // spatial


def from_spec(spec, name: str, config: dict, vae_config: dict, video: tuple[int, int, int],
              text_tokens: int | None = None, *, image_tokens: int | None = None, cfg_branches: int | None = None,
              steps: int = 50, **fields) -> ModelShape:
    """The shape of generating ``video`` = (frames, height, width) with a transformer of the family ``spec``
    (an ``svg2.diffusers`` ``ModelSpec``) under its ``config`` and the VAE's ``vae_config``: layers, heads, widths
    and, unless given, prompt and image tokens from ``spec.dims``, the latent grid from ``spec.latent_grid``, CFG
    branches (unless given) as a guided generation runs them. ``fields``: the rest of ``ModelShape``."""
    dims = spec.dims(config)
    grid = tuple(spec.latent_grid(config, vae_config, *video))
    return ModelShape(name, dims["layers"], dims["heads"], dims["head_dim"], dims["mlp_dim"], math.prod(grid),
                      dims["text_tokens"] if text_tokens is None else text_tokens, joint=dims["joint"],
                      image_tokens=dims["image_tokens"] if image_tokens is None else image_tokens,
                      cfg_branches=spec.cfg_branches(math.inf) if cfg_branches is None else cfg_branches,
                      steps=steps, grid=grid, video=tuple(video), **fields)


def from_transformer(name: str, config: dict, video: tuple[int, int, int], text_tokens: int | None = None, *,
                     image_tokens: int | None = None, cfg_branches: int | None = None, steps: int = 50,
                     configs: str | None = None, vae_config: dict | None = None) -> ModelShape:
    """``from_spec`` for a diffusers transformer ``config`` (its ``_class_name`` picks the family), keeping the
    configuration to build the transformer from. ``vae_config`` None: the VAE configuration committed in
    ``configs``, or the family's default VAE without one."""
    from svg2.diffusers import transformer_spec

    cls = config.get("_class_name")
    spec = transformer_spec(str(cls))  # an unsupported class is an error naming the supported ones
    if vae_config is None:
        vae_config = load_config(configs, "vae") if configs is not None else {}
    kept = {k: v for k, v in config.items() if k == "_class_name" or not k.startswith("_")}  # not "_source"
    return from_spec(spec, name, config, vae_config, video, text_tokens, image_tokens=image_tokens,
                     cfg_branches=cfg_branches, steps=steps, transformer=cls, transformer_config=kept, configs=configs)


def load_config(folder: str, component: str) -> dict:
    """A committed public configuration, ``eval/model_configs/<folder>/<component>.json``."""
    path = CONFIGS / folder / f"{component}.json"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS / folder).glob("*.json"))
        raise FileNotFoundError(f"{path} does not exist; {folder} has {known}")
    return json.loads(path.read_text())


def _real(name: str, folder: str, video, **kwargs) -> ModelShape:
    return from_transformer(name, load_config(folder, "transformer"), video, configs=folder, **kwargs)


# prompt and image tokens and CFG branches are the families' (ModelSpec.dims, guidance_branches)
SHAPES = {
    s.name: s for s in (
        _real("wan_t2v_1.3b_480p", "Wan2.1-T2V-1.3B-Diffusers", (81, 480, 832)),
        _real("wan_t2v_14b_720p", "Wan2.1-T2V-14B-Diffusers", (81, 720, 1280)),
        # the reference I2V script's and the paper's steps
        _real("wan_i2v_14b_720p", "Wan2.1-I2V-14B-720P-Diffusers", (81, 720, 1280), steps=40),
        _real("hunyuan_720p", "HunyuanVideo", (129, 720, 1280)),  # guidance-distilled: one call a step
        _real("cogvideox_5b_480p", "CogVideoX-5b", (49, 480, 720)),
    )
}


def get_shape(name: str) -> ModelShape:
    if name not in SHAPES:
        raise ValueError(f"shape {name!r}; expected one of {sorted(SHAPES)}")
    return SHAPES[name]


def parse_shapes(text: str) -> list[ModelShape]:
    """'wan_t2v_14b_720p,hunyuan_720p' -> those shapes (a CLI argument)."""
    names = [n for n in text.split(",") if n]
    if not names:
        raise ValueError(f"no shape named in {text!r}; expected some of {sorted(SHAPES)}")
    return [get_shape(n) for n in names]


def build_transformer(shape: ModelShape, device="cpu", dtype=None, seed: int = 0):
    """The shape's diffusers transformer with random weights from ``seed`` (torch's global generators are
    reseeded), made directly in ``dtype`` on ``device`` (``"meta"``: no memory, for counting FLOPs)."""
    import diffusers
    import torch

    if shape.transformer_config is None:
        raise ValueError(f"shape {shape.name!r} has no transformer configuration; expected one of {sorted(SHAPES)}")
    config = {k: v for k, v in shape.transformer_config.items() if k != "_class_name"}
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype or default)
    torch.manual_seed(seed)  # the same weights on every run, so densities at a top-p budget repeat
    try:
        with torch.device(device):
            model = getattr(diffusers, shape.transformer)(**config)
    finally:
        torch.set_default_dtype(default)
    return model.eval().requires_grad_(False)


def transformer_inputs(shape: ModelShape, device="cpu", dtype=None, seed: int = 0) -> dict:
    """Keyword arguments of one transformer forward of the shape's generation (batch 1, one CFG branch):
    a smooth latent field (coarse noise upsampled, plus a little fine noise, so top-p budgets find real
    clusters), random prompt (and image) features, a mid-schedule timestep."""
    import torch
    import torch.nn.functional as F

    c = shape.transformer_config
    g = torch.Generator().manual_seed(seed)
    latent = (c["in_channels"], *latent_size(*shape.video))
    ch, f, h, w = latent
    coarse = torch.randn(1, ch, max(2, f // 4), max(2, h // 8), max(2, w // 8), generator=g)
    x = F.interpolate(coarse, size=(f, h, w), mode="trilinear") + 0.1 * torch.randn(1, *latent, generator=g)
    text_dim = c.get("text_dim", c.get("text_embed_dim"))
    inputs = dict(hidden_states=x, timestep=torch.tensor([500.0]),
                  encoder_hidden_states=torch.randn(1, shape.text_tokens, text_dim, generator=g))
    if shape.transformer == "WanTransformer3DModel" and c.get("image_dim"):
        inputs["encoder_hidden_states_image"] = torch.randn(1, shape.image_tokens, c["image_dim"], generator=g)
    elif shape.transformer == "HunyuanVideoTransformer3DModel":
        inputs.update(encoder_attention_mask=torch.ones(1, shape.text_tokens, dtype=torch.long),
                      pooled_projections=torch.randn(1, c["pooled_projection_dim"], generator=g),
                      guidance=torch.tensor([6000.0]))
    elif shape.transformer == "CogVideoXTransformer3DModel":
        inputs["hidden_states"] = x.transpose(1, 2)  # (B, F, C, H, W)
        if c.get("use_rotary_positional_embeddings"):
            inputs["image_rotary_emb"] = _cogvideox_rope(shape, f)
    dtype = dtype or torch.get_default_dtype()
    return {k: _to(v, device, dtype) for k, v in inputs.items()}


def _cogvideox_rope(shape: ModelShape, latent_frames: int):
    """The rotary embedding the CogVideoX pipeline computes outside the transformer (its own helper)."""
    from types import SimpleNamespace

    from diffusers import CogVideoXPipeline

    host = SimpleNamespace(vae_scale_factor_spatial=8,
                           transformer=SimpleNamespace(config=SimpleNamespace(**shape.transformer_config)))
    _, height, width = shape.video
    return CogVideoXPipeline._prepare_rotary_positional_embeddings(host, height, width, latent_frames, "cpu")


def _to(value, device, dtype):
    if isinstance(value, tuple):
        return tuple(_to(v, device, dtype) for v in value)
    return value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
