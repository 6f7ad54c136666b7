"""Video workload: generate with dense attention and with the method from the same prompt and seed,
score the frames, time both, keep a dense | sparse | difference GIF."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch

from eval.metrics import available_nets, flops_from_stats, video_metrics
from eval.metrics.perceptual import lpips_model
from eval.models import ModelConfig
from eval.ranks import Ranks
from eval.results import atomic_write, stable_key
from eval.workloads.base import Job, check_generation, prompt_items
from eval.workloads.common import ratio, summarise_calls
from svg2.checks import check_int
from svg2.methods import reference_method
from svg2.timing import Clock, ForwardTimer


@dataclass
class Generation:
    frames: torch.Tensor          # (T, C, H, W) float32 in [0, 1], on the CPU
    e2e_ms: float
    step_ms: list                 # milliseconds of each transformer forward
    calls: list                   # method.stats as rows (of the whole call when the heads are split over ranks)
    ranks: list = field(default_factory=list)  # each rank's e2e_ms and step_ms (one entry in one process)


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
    warmup_steps: int = 1          # one short generation per method before timing, its sparse calls included
    gif: bool = True
    gif_max_height: int = 128
    name: str = "video"

    needs_model = True
    sequence_parallel = True       # runs under parallel.world_size > 1 (eval/ranks.py)

    def __post_init__(self):
        check_generation(self)
        check_int("workload.warmup_steps", self.warmup_steps)
        check_int("workload.gif_max_height", self.gif_max_height, minimum=1)

    def items(self) -> list[tuple[str, int]]:
        return prompt_items(self.prompts, self.num_prompts, self.seeds)

    def identity(self) -> dict:
        return dict(name=self.name, steps=self.steps, height=self.height, width=self.width, frames=self.frames,
                    guidance_scale=self.guidance_scale)

    def geometry(self, model: ModelConfig) -> dict:
        return model.geometry(self.frames, self.height, self.width)

    def check(self, metrics) -> None:
        for net in lpips_nets(metrics):
            lpips_model(net)  # loads (and caches) the backbone; a missing one is an error naming its file

    def run(self, job: Job) -> dict:
        """One row's measurements: dense and the method from the same prompt and seed, scored and timed."""
        refs = DenseReferences.at(job.cache / "references")
        dense, ref_frames = refs.get(self, job.pipe, job.model, job.prompt, job.seed, job.device,
                                     need_timing=job.metrics.time_dense, ranks=job.ranks)
        # the reference's row is the reference generation itself (same process, same timing)
        gen = dense if job.method.is_reference and dense is not None else self.generate(
            job.pipe, job.method, job.model, job.prompt, job.seed, job.device, job.ranks)
        row = video_metrics(ref_frames, gen.frames, lpips_nets(job.metrics), job.metrics.ssim, job.metrics.lpips_inputs)
        calls = summarise_calls(gen.calls)
        shape = job.model.shape(self.frames, self.height, self.width, self.steps, self.guidance_scale)
        densities = [c["density"] for c in gen.calls]
        flops = flops_from_stats(shape, densities) if gen.calls else {}
        if gen.calls and shape.configs is not None:  # a real model's committed configurations: count the pipeline
            from eval.metrics.pipeline_flops import pipeline_flops_from_stats

            row.update(pipeline_flops_from_stats(shape, densities))
        row.update(calls)
        row.update(flops=flops.get("flops"), flops_dense=flops.get("flops_dense"),
                   flops_ratio=flops.get("flops_ratio"), tokens=shape.video_tokens, timer=Clock(job.device).label,
                   e2e_ms=gen.e2e_ms, step_ms=_per_step(gen.step_ms, self.steps),
                   e2e_ms_ranks=[r["e2e_ms"] for r in gen.ranks],
                   step_ms_ranks=[_per_step(r["step_ms"], self.steps) for r in gen.ranks])
        if dense is not None:
            dcalls = summarise_calls(dense.calls)
            dense_step = _per_step(dense.step_ms, self.steps)
            row.update(e2e_ms_dense=dense.e2e_ms, step_ms_dense=dense_step, attn_ms_dense=dcalls["attn_ms"],
                       step_ms_dense_ranks=[_per_step(r["step_ms"], self.steps) for r in dense.ranks],
                       speedup_e2e=ratio(dense.e2e_ms, gen.e2e_ms), speedup_step=ratio(dense_step, row["step_ms"]),
                       speedup_attn=ratio(dcalls["attn_ms"], calls.get("attn_ms")))
        if self.gif and job.ranks.writer:
            path = job.artifact(".gif")
            save_comparison_gif(path, ref_frames, gen.frames, self.gif_max_height)
            row["gif"] = str(path)
        row["per_call"] = gen.calls
        return row

    def call_kwargs(self, model: ModelConfig, prompt: str, seed: int, device: str, steps: int) -> dict:
        kw = dict(prompt=prompt, height=self.height, width=self.width, num_frames=self.frames,
                  num_inference_steps=steps, guidance_scale=self.guidance_scale, output_type="pt",
                  generator=torch.Generator(device).manual_seed(seed), **model.call_kwargs)
        if model.spec.needs_image:
            if not model.image:
                raise ValueError(f"model.kind={model.kind} needs model.image=<path to the conditioning image>")
            from PIL import Image

            kw["image"] = Image.open(model.image).convert("RGB").resize((self.width, self.height))
        return kw

    def generate(self, pipe, method, model: ModelConfig, prompt: str, seed: int, device: str,
                 ranks: Ranks = Ranks()) -> Generation:
        """One generation with ``method`` installed (over ``ranks``: every rank generates with Ulysses sequence
        parallelism and gets the whole video)."""
        from svg2.diffusers import apply, remove

        clock = Clock(device)
        if self.warmup_steps:
            # a copy without dense steps: a short generation under the method's own dense_steps would run only
            # dense calls and leave the sparse kernels to compile and autotune inside the timed generation
            warm = method if method.is_reference else type(method)(method.config, dense_steps=0)
            apply(pipe, warm, parallel=ranks.ulysses)
            try:
                pipe(**self.call_kwargs(model, prompt, seed, device, self.warmup_steps))
            finally:
                remove(pipe)
        apply(pipe, method, parallel=ranks.ulysses)
        try:
            timer = ForwardTimer(pipe.transformer, clock)
            start = clock.mark()
            out = pipe(**self.call_kwargs(model, prompt, seed, device, self.steps))
            end = clock.mark()
            step_ms = timer.remove()
            calls = [s.as_row() for s in method.stats]
        finally:
            remove(pipe)
        frames = out.frames[0].float().cpu()
        e2e_ms = clock.ms(start, end)
        return Generation(frames, e2e_ms, step_ms, ranks.whole_calls(calls),
                          ranks.gather(dict(e2e_ms=e2e_ms, step_ms=step_ms)))


class DenseReferences:
    """Dense generations cached on disk per (model, prompt, seed, steps, resolution, device type); their timing is
    kept in memory only, so every process times dense itself on its own hardware. One instance per folder and
    process (``at``), so the jobs of a multirun in one process time each reference once."""

    _open: dict[str, "DenseReferences"] = {}

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.timings: dict[str, Generation] = {}

    @classmethod
    def at(cls, folder: Path) -> "DenseReferences":
        key = str(Path(folder).expanduser().resolve())
        if key not in cls._open:
            cls._open[key] = cls(Path(folder))
        return cls._open[key]

    def get(self, workload: VideoWorkload, pipe, model: ModelConfig, prompt: str, seed: int, device: str,
            need_timing: bool, ranks: Ranks = Ranks()) -> tuple[Generation | None, torch.Tensor]:
        # the device type is part of the key: CPU and GPU kernels round differently
        key = stable_key(model.identity(), workload.identity(), prompt, seed, torch.device(device).type)
        path = self.folder / f"{key}.pt"
        if key in self.timings:
            return self.timings[key], self.timings[key].frames
        cached = ranks.agree(path.is_file)  # every rank generates, or none does
        if cached and not need_timing:
            return None, torch.load(path, weights_only=True)
        gen = workload.generate(pipe, reference_method(), model, prompt, seed, device, ranks)
        if ranks.writer and not path.is_file():
            buf = io.BytesIO()
            torch.save(gen.frames, buf)
            atomic_write(path, buf.getvalue())
        self.timings[key] = gen
        return gen, gen.frames


def lpips_nets(metrics) -> tuple[str, ...]:
    return tuple(available_nets()) if metrics.lpips == "auto" else tuple(metrics.lpips)


def _per_step(forward_ms: list, steps: int):
    """Transformer time of one denoising step (all its CFG forwards)."""
    return sum(forward_ms) / steps if forward_ms else None


def save_comparison_gif(path: Path, ref: torch.Tensor, out: torch.Tensor, max_height: int = 128, fps: int = 8,
                        gain: float = 4.0) -> Path:
    """dense | sparse | gain·|difference| side by side under a header strip naming each panel, one GIF frame per
    video frame."""
    from PIL import Image

    diff = ((out - ref).abs() * gain).clamp(0, 1)
    strip = torch.cat([ref, out, diff], dim=-1)  # (T, C, H, 3W)
    h = strip.shape[-2]
    if h > max_height:
        strip = torch.nn.functional.interpolate(strip, scale_factor=max_height / h, mode="area")
    reference = reference_method().config.label()
    labels = [[reference], ["sparse"], [f"{gain:g}x|difference|", f"{gain:g}x|diff|"]]  # the font has no '×'
    header = _panel_header(strip.shape[-1], strip.shape[-2], labels)
    images = [Image.fromarray((f.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()) for f in strip]
    images = [_stack(header, im) for im in images]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    atomic_write(path, buf.getvalue())  # a temporary file of its own: concurrent writers of one key never share one
    return path


def _panel_header(width: int, height: int, labels: list[list[str]]):
    """A white strip as wide as the panels, each panel's label centred over it (the first candidate that fits
    the panel's width, else the last at a smaller size)."""
    from PIL import Image, ImageDraw

    panel = width // len(labels)
    size = max(8, min(16, round(height * 0.14)))
    strip = Image.new("RGB", (width, size + 6), "white")
    draw = ImageDraw.Draw(strip)
    for i, candidates in enumerate(labels):
        for text in candidates:
            font = _font(size)
            if draw.textlength(text, font=font) <= panel - 2:
                break
        while draw.textlength(text, font=font) > panel - 2 and getattr(font, "size", 0) > 6:
            font = _font(font.size - 1)
        x = i * panel + (panel - draw.textlength(text, font=font)) / 2
        draw.text((x, 3), text, fill="black", font=font)
    return strip


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (Pillow >= 10.1 with FreeType)
    except TypeError:  # older Pillow: its fixed-size bitmap font
        return ImageFont.load_default()


def _stack(header, image):
    from PIL import Image

    out = Image.new("RGB", (image.width, header.height + image.height), "white")
    out.paste(header, (0, 0))
    out.paste(image, (0, header.height))
    return out
