"""What the integration needs to know about each supported diffusers video transformer, and loading
pipelines from a local diffusers directory.

A ``ModelSpec`` names the self-attention modules in layer order, how to read the latent grid
(frames, h, w) off the transformer input, where the conditioning tokens sit in the joint sequence, and
which attention function the stock processor calls (the one call the sparse processor reroutes).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class ModelSpec:
    transformer: str                       # diffusers transformer class name
    self_attention: Callable               # transformer -> list of self-attention modules in layer order
    grid: Callable                         # (transformer, hidden_states) -> latent token grid (t, h, w)
    text: str | None                       # conditioning tokens in the self-attention: None, "appended", "prepended"
    layout: str                            # q/k/v layout of the attention call: "bshd" or "bhsd"
    attention_fn: str                      # module-level name the stock processor calls attention through


def _wan_grid(model, x):
    t, h, w = model.config.patch_size
    return x.shape[2] // t, x.shape[3] // h, x.shape[4] // w


def _hunyuan_grid(model, x):
    p, pt = model.config.patch_size, model.config.patch_size_t
    return x.shape[2] // pt, x.shape[3] // p, x.shape[4] // p


def _cogvideox_grid(model, x):  # CogVideoX latents are (B, F, C, H, W)
    p, pt = model.config.patch_size, model.config.patch_size_t or 1
    return x.shape[1] // pt, x.shape[3] // p, x.shape[4] // p


SPECS = {
    # Wan I2V conditions through channel-concatenated latents and cross-attention (attn2): its
    # self-attention holds video tokens only, so the image conditioning stays dense by construction.
    "WanTransformer3DModel": ModelSpec(
        "WanTransformer3DModel", lambda m: [b.attn1 for b in m.blocks], _wan_grid, None, "bshd",
        "dispatch_attention_fn"),
    "HunyuanVideoTransformer3DModel": ModelSpec(
        "HunyuanVideoTransformer3DModel",
        lambda m: [b.attn for b in m.transformer_blocks] + [b.attn for b in m.single_transformer_blocks],
        _hunyuan_grid, "appended", "bshd", "dispatch_attention_fn"),
    "CogVideoXTransformer3DModel": ModelSpec(
        "CogVideoXTransformer3DModel", lambda m: [b.attn1 for b in m.transformer_blocks], _cogvideox_grid,
        "prepended", "bhsd", "F"),
}


def model_spec(transformer) -> ModelSpec:
    name = type(transformer).__name__
    if name not in SPECS:
        raise ValueError(f"transformer {name} is not supported; expected one of {sorted(SPECS)}")
    return SPECS[name]


# kind -> (pipeline class, components that must be present in the directory)
PIPELINES = {
    "wan_t2v": ("WanPipeline", ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")),
    "wan_i2v": ("WanImageToVideoPipeline",
                ("transformer", "vae", "text_encoder", "tokenizer", "scheduler", "image_encoder", "image_processor")),
    "hunyuan": ("HunyuanVideoPipeline",
                ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler")),
    "cogvideox": ("CogVideoXPipeline", ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")),
}

_CONFIG_FILE = {"scheduler": "scheduler_config.json", "image_processor": "preprocessor_config.json",
                "tokenizer": "tokenizer_config.json", "tokenizer_2": "tokenizer_config.json"}


def expected_files(kind: str) -> list[str]:
    _, components = PIPELINES[kind]
    return ["model_index.json"] + [f"{c}/{_CONFIG_FILE.get(c, 'config.json')}" for c in components]


def check_pipeline_dir(kind: str, path) -> None:
    """One error naming every expected file that is missing, or a model_index of another pipeline."""
    if kind not in PIPELINES:
        raise ValueError(f"kind={kind!r}; expected one of {sorted(PIPELINES)}")
    cls_name = PIPELINES[kind][0]
    path = os.fspath(path)
    missing = [f for f in expected_files(kind) if not os.path.isfile(os.path.join(path, f))]
    if missing:
        where = "does not exist" if not os.path.isdir(path) else f"lacks {', '.join(missing)}"
        raise FileNotFoundError(
            f"model.path={path!r} {where}; a {kind} diffusers directory ({cls_name}) needs "
            f"{', '.join(expected_files(kind))} (and the weights beside each config)")
    with open(os.path.join(path, "model_index.json")) as f:
        found = json.load(f).get("_class_name")
    if found != cls_name:
        raise ValueError(f"model.path={path!r} holds a {found} pipeline; kind={kind!r} expects {cls_name}")


def load_pipeline(kind: str, path, dtype: torch.dtype = torch.float32, device="cpu"):
    """Load a diffusers video pipeline of ``kind`` from a local directory (never from the hub)."""
    import diffusers

    check_pipeline_dir(kind, path)
    cls = getattr(diffusers, PIPELINES[kind][0])
    pipe = cls.from_pretrained(os.fspath(path), dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
