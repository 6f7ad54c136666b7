"""Video workload: generate with dense attention and with the method from the same prompt and seed,
score the frames, time both, keep a dense | sparse | difference GIF."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch

from eval.clock import Clock, ForwardTimer
from eval.metrics import available_nets, flops_from_stats, video_metrics
from eval.models import ModelConfig, flops_shape
from eval.results import atomic_write, stable_key
from eval.workloads.common import ratio, summarise_calls


@dataclass
class Generation:
    frames: torch.Tensor          # (T, C, H, W) float32 in [0, 1], on the CPU
    e2e_ms: float
    step_ms: list                 # milliseconds of each transformer forward
    calls: list                   # method.stats as rows


@dataclass
class VideoWorkload:
    steps: int
    height: int
    width: int
    frames: int
    guidance_scale: float
    prompts: list
    num_prompts: int | None = None
    seeds: list = field(default_factory=lambda: [0])
    warmup_steps: int = 1          # one short generation per method before timing (compile, allocator)
    gif: bool = True
    gif_max_height: int = 128
    name: str = "video"

    def items(self) -> list[tuple[str, int]]:
        prompts = list(self.prompts)[: self.num_prompts] if self.num_prompts else list(self.prompts)
        if not prompts:
            raise ValueError("workload has no prompts; set model.prompts or workload.prompts")
        return [(p, int(s)) for p in prompts for s in self.seeds]

    def identity(self) -> dict:
        return dict(name=self.name, steps=self.steps, height=self.height, width=self.width, frames=self.frames,
                    guidance_scale=self.guidance_scale)

    def call_kwargs(self, model: ModelConfig, prompt: str, seed: int, device: str, steps: int) -> dict:
        kw = dict(prompt=prompt, height=self.height, width=self.width, num_frames=self.frames,
                  num_inference_steps=steps, guidance_scale=self.guidance_scale, output_type="pt",
                  generator=torch.Generator(device).manual_seed(seed), **model.call_kwargs)
        if model.kind == "wan_i2v":
            if not model.image:
                raise ValueError("model.kind=wan_i2v needs model.image=<path to the conditioning image>")
            from PIL import Image

            kw["image"] = Image.open(model.image).convert("RGB").resize((self.width, self.height))
        return kw

    def generate(self, pipe, method, model: ModelConfig, prompt: str, seed: int, device: str) -> Generation:
        from svg2.diffusers import apply, remove

        clock = Clock(device)
        apply(pipe, method)
        try:
            if self.warmup_steps:
                pipe(**self.call_kwargs(model, prompt, seed, device, self.warmup_steps))
            timer = ForwardTimer(pipe.transformer, clock)
            start = clock.mark()
            out = pipe(**self.call_kwargs(model, prompt, seed, device, self.steps))
            end = clock.mark()
            step_ms = timer.remove()
            calls = [s.as_row() for s in method.stats]
        finally:
            remove(pipe)
        frames = out.frames[0].float().cpu()
        return Generation(frames, clock.ms(start, end), step_ms, calls)


class DenseReferences:
    """Dense generations cached on disk per (model, prompt, seed, steps, resolution, device type); their timing is
    kept in memory only, so every process times dense itself on its own hardware."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.timings: dict[str, Generation] = {}

    def get(self, workload: VideoWorkload, pipe, model: ModelConfig, prompt: str, seed: int, device: str,
            need_timing: bool) -> tuple[Generation | None, torch.Tensor]:
        from svg2.methods import build_method

        # the device type is part of the key: CPU and GPU kernels round differently
        key = stable_key(model.identity(), workload.identity(), prompt, seed, torch.device(device).type)
        path = self.folder / f"{key}.pt"
        if key in self.timings:
            return self.timings[key], self.timings[key].frames
        if path.is_file() and not need_timing:
            return None, torch.load(path, weights_only=True)
        gen = workload.generate(pipe, build_method("dense"), model, prompt, seed, device)
        if not path.is_file():
            buf = io.BytesIO()
            torch.save(gen.frames, buf)
            atomic_write(path, buf.getvalue())
        self.timings[key] = gen
        return gen, gen.frames


def run_video_item(workload: VideoWorkload, pipe, method, model: ModelConfig, prompt: str, seed: int, device: str,
                   refs: DenseReferences, metrics_cfg, gif_path: Path | None) -> dict:
    """One row's measurements (without the identifying columns)."""
    dense, ref_frames = refs.get(workload, pipe, model, prompt, seed, device, need_timing=metrics_cfg.time_dense)
    # the default dense method's row is the reference generation itself (same process, same timing)
    is_reference = method.name == "dense" and method.config.dense_backend == "auto" and dense is not None
    gen = dense if is_reference else workload.generate(pipe, method, model, prompt, seed, device)
    nets = available_nets() if metrics_cfg.lpips == "auto" else tuple(metrics_cfg.lpips)
    row = video_metrics(ref_frames, gen.frames, nets)
    calls = summarise_calls(gen.calls)
    shape = flops_shape(model, pipe, workload.height, workload.width, gen.frames.shape[0], workload.steps,
                        workload.guidance_scale)  # the frames generated: pipelines round the request
    flops = flops_from_stats(shape, [c["density"] for c in gen.calls]) if gen.calls else {}
    row.update(calls)
    row.update(flops=flops.get("flops"), flops_dense=flops.get("flops_dense"), flops_ratio=flops.get("flops_ratio"),
               tokens=shape.video_tokens, timer=Clock(device).label, e2e_ms=gen.e2e_ms,
               step_ms=_per_step(gen.step_ms, workload.steps))
    if dense is not None:
        dcalls = summarise_calls(dense.calls)
        dense_step = _per_step(dense.step_ms, workload.steps)
        row.update(e2e_ms_dense=dense.e2e_ms, step_ms_dense=dense_step, attn_ms_dense=dcalls["attn_ms"],
                   speedup_e2e=ratio(dense.e2e_ms, gen.e2e_ms), speedup_step=ratio(dense_step, row["step_ms"]),
                   speedup_attn=ratio(dcalls["attn_ms"], calls.get("attn_ms")))
    if gif_path is not None:
        save_comparison_gif(gif_path, ref_frames, gen.frames, workload.gif_max_height)
        row["gif"] = str(gif_path)
    row["per_call"] = gen.calls
    return row


def _per_step(forward_ms: list, steps: int):
    """Transformer time of one denoising step (all its CFG forwards)."""
    return sum(forward_ms) / steps if forward_ms else None


def save_comparison_gif(path: Path, ref: torch.Tensor, out: torch.Tensor, max_height: int = 128, fps: int = 8,
                        gain: float = 4.0) -> Path:
    """dense | sparse | gain·|difference| side by side, one GIF frame per video frame."""
    from PIL import Image

    diff = ((out - ref).abs() * gain).clamp(0, 1)
    strip = torch.cat([ref, out, diff], dim=-1)  # (T, C, H, 3W)
    h = strip.shape[-2]
    if h > max_height:
        strip = torch.nn.functional.interpolate(strip, scale_factor=max_height / h, mode="area")
    images = [Image.fromarray((f.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()) for f in strip]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    atomic_write(path, buf.getvalue())  # a temporary file of its own: concurrent writers of one key never share one
    return path
