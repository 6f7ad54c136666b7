"""Model sources of the harness: a real diffusers checkpoint from ``model.path``, the shipped embedded model, or a
tiny random pipeline built on first use; what the harness reads off the model's configs before any weights load
(token grid, heads, head dim) and the FLOPs shape of a generation."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import torch

from eval.shapes import SHAPES, ModelShape, from_spec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelConfig:
    name: str                          # label in rows and tables
    kind: str                          # svg2.diffusers model kind: wan_t2v, wan_i2v, hunyuan, cogvideox
    path: str                          # local diffusers directory
    build_tiny: bool = False           # build a tiny random pipeline at ``path`` when it is missing
    dtype: str = "float32"
    height: int = 64
    width: int = 64
    frames: int = 9
    steps: int = 10
    guidance_scale: float = 5.0
    call_kwargs: dict = field(default_factory=dict)   # extra pipeline call arguments
    prompts: list = field(default_factory=list)
    image: str | None = None           # conditioning image (wan_i2v)
    flops_shape: str | None = None     # a name in eval.shapes.SHAPES; None = from the model's own config
    clusters: dict = field(default_factory=dict)      # recommended method sizes (used by conf/method/*)
    block_size: int = 128

    def __post_init__(self):
        from svg2.diffusers import model_spec

        self.spec = model_spec(self.kind)  # an unknown kind is an error naming the known ones
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype={self.dtype!r}; expected one of {sorted(DTYPES)}")
        if self.flops_shape is not None and self.flops_shape not in SHAPES:
            raise ValueError(f"model.flops_shape={self.flops_shape!r}; expected one of {sorted(SHAPES)} or null")

    def identity(self) -> dict:
        """What makes two generations comparable (the dense-reference cache key, part of every row key):
        the weights themselves, so retraining a model at the same path invalidates its references."""
        path = Path(self.path).expanduser().resolve()
        return dict(name=self.name, kind=self.kind, path=str(path), weights=weights_fingerprint(str(path)),
                    dtype=self.dtype, call_kwargs=dict(self.call_kwargs), image=self.image)

    def prepare(self) -> None:
        """Build the tiny random pipeline at ``path`` if asked and missing (before any row key is made)."""
        from svg2.diffusers import build_tiny_pipeline

        path = Path(self.path).expanduser()
        if self.build_tiny and not (path / "model_index.json").is_file():
            build_tiny_pipeline(self.kind, path)

    def load(self, device: str):
        from svg2.diffusers import load_pipeline

        self.prepare()
        return load_pipeline(self.kind, Path(self.path).expanduser(), dtype=DTYPES[self.dtype], device=device)

    def configs(self) -> tuple[dict, dict]:
        """The transformer's and the VAE's config.json, read without loading weights."""
        from svg2.diffusers import check_pipeline_dir, read_config

        self.prepare()
        path = Path(self.path).expanduser()
        check_pipeline_dir(self.kind, path)
        return read_config(path, "transformer/config.json"), read_config(path, "vae/config.json")

    def geometry(self, frames: int, height: int, width: int) -> dict:
        """Latent token grid, tokens, heads and head dim of a generation at this size (what shape checks need)."""
        tconfig, vconfig = self.configs()
        grid = tuple(int(g) for g in self.spec.latent_grid(tconfig, vconfig, frames, height, width))
        dims = self.spec.dims(tconfig)
        return dict(tokens=math.prod(grid), grid=grid, heads=dims["heads"], head_dim=dims["head_dim"])

    def shape(self, frames: int, height: int, width: int, steps: int, guidance_scale: float) -> ModelShape:
        """The FLOPs shape of a generation: the named paper shape at this generation's tokens and steps, or the
        one the transformer's config gives."""
        tconfig, vconfig = self.configs()
        run = dict(cfg_branches=self.spec.cfg_branches(guidance_scale), steps=steps)
        own = from_spec(self.spec, self.name, tconfig, vconfig, (frames, height, width), **run)
        if self.flops_shape is None:
            return own
        named = SHAPES[self.flops_shape]
        # its committed configs describe another video size when the tokens differ
        configs = named.configs if named.video_tokens == own.video_tokens else None
        return replace(named, video_tokens=own.video_tokens, configs=configs, **run)


def weights_fingerprint(path: str) -> str | None:
    """Hash of a model directory: contents of files under 64 MB (configs, small weights), size and mtime of
    larger ones (hashing a 14B checkpoint would take minutes). None if the directory does not exist."""
    return _fingerprint(path) if Path(path).is_dir() else None


@lru_cache(maxsize=8)
def _fingerprint(path: str, full_hash_below: int = 64 << 20) -> str:
    root = Path(path)
    h = hashlib.sha1()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(root)}:{st.st_size}".encode())
        if st.st_size < full_hash_below:
            h.update(f.read_bytes())
        else:
            h.update(str(st.st_mtime_ns).encode())
    return h.hexdigest()[:16]


def resolve_device(device: str, job_num: int | None = None) -> str:
    """'auto': the CPU without CUDA; else one GPU, spread by Hydra job number over the visible GPUs, so a
    local multi-process launcher (joblib, n_jobs = GPU count) runs one job per GPU."""
    if device == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        return f"cuda:{job_num % torch.cuda.device_count()}" if job_num is not None else "cuda"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; expected 'auto' or 'cpu'")
    return device
