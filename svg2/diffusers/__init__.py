"""Sparse attention inside diffusers video pipelines (Wan 2.1 T2V/I2V, HunyuanVideo, CogVideoX).

    pipe = load_pipeline("wan_t2v", path)
    method = build_method("svg2", **asdict(svg2_preset("wan_480p")))
    apply(pipe, method)      # self-attention only; originals kept
    video = pipe(prompt, ...).frames
    remove(pipe)
"""
from svg2.diffusers.models import PIPELINES, SPECS, ModelSpec, expected_files, load_pipeline, model_spec
from svg2.diffusers.processor import SparseProcessor, apply, remove
from svg2.diffusers.tiny import TINY_CALL, build_tiny_pipeline

__all__ = ["PIPELINES", "SPECS", "ModelSpec", "SparseProcessor", "TINY_CALL", "apply", "build_tiny_pipeline",
           "expected_files", "load_pipeline", "model_spec", "remove"]
