"""Sparse attention inside diffusers video pipelines (Wan 2.1 T2V/I2V, HunyuanVideo, CogVideoX).

    pipe = load_pipeline("wan_t2v", path)
    method = build_method("svg2", **asdict(svg2_preset("wan_t2v_1.3b_480p")))
    apply(pipe, method)      # self-attention only; originals kept
    video = pipe(prompt, ...).frames
    remove(pipe)
    apply(pipe, method, parallel="ulysses")   # under torchrun: each video over all ranks (svg2.parallel)
"""
import svg2.diffusers.models  # noqa: F401  (registers every model spec)
from svg2.diffusers.loading import check_pipeline_dir, expected_files, load_pipeline, read_config
from svg2.diffusers.processor import SparseProcessor, apply, remove
from svg2.diffusers.spec import SPECS, ModelSpec, model_spec, register_model, transformer_spec
from svg2.diffusers.tiny import build_tiny_pipeline

__all__ = ["SPECS", "ModelSpec", "SparseProcessor", "apply", "build_tiny_pipeline", "check_pipeline_dir",
           "expected_files", "load_pipeline", "model_spec", "read_config", "register_model", "remove",
           "transformer_spec"]
