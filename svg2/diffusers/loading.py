"""Loading diffusers video pipelines from a local directory (never from a model hub)."""
from __future__ import annotations

import json
import os

import torch

from svg2.diffusers.spec import model_spec

_CONFIG_FILE = {"scheduler": "scheduler_config.json", "image_processor": "preprocessor_config.json",
                "tokenizer": "tokenizer_config.json", "tokenizer_2": "tokenizer_config.json"}


def expected_files(kind: str) -> list[str]:
    return ["model_index.json"] + [f"{c}/{_CONFIG_FILE.get(c, 'config.json')}" for c in model_spec(kind).components]


def check_pipeline_dir(kind: str, path) -> None:
    """One error naming every expected file that is missing, or a model_index of another pipeline."""
    cls_name = model_spec(kind).pipeline
    path = os.fspath(path)
    missing = [f for f in expected_files(kind) if not os.path.isfile(os.path.join(path, f))]
    if missing:
        where = "does not exist" if not os.path.isdir(path) else f"lacks {', '.join(missing)}"
        raise FileNotFoundError(
            f"model.path={path!r} {where}; a {kind} diffusers directory ({cls_name}) needs "
            f"{', '.join(expected_files(kind))} (and the weights beside each config)")
    found = read_config(path, "model_index.json").get("_class_name")
    if found != cls_name:
        raise ValueError(f"model.path={path!r} holds a {found} pipeline; kind={kind!r} expects {cls_name}")


def read_config(path, name: str) -> dict:
    """A JSON config of a pipeline directory (``transformer/config.json`` ...), read without loading weights."""
    with open(os.path.join(os.fspath(path), name)) as f:
        return json.load(f)


def load_pipeline(kind: str, path, dtype: torch.dtype = torch.float32, device="cpu"):
    """Load a diffusers video pipeline of ``kind`` from a local directory."""
    import diffusers

    check_pipeline_dir(kind, path)
    cls = getattr(diffusers, model_spec(kind).pipeline)
    pipe = cls.from_pretrained(os.fspath(path), dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
