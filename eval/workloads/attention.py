"""Attention workload: Q/K/V of chosen self-attention calls, captured from a dense generation of the
model (cached on disk) or synthetic at a real shape, scored by the error of the method's output against
dense attention of the same call, and timed against the fastest dense backend on the same tensors."""
from __future__ import annotations

import copy
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from eval.metrics import cosine_error, relative_l2
from eval.metrics.attention import plan_quality
from eval.results import atomic_write, stable_key
from eval.shapes import SHAPES
from eval.workloads.base import Job, check_generation, prompt_items
from eval.workloads.common import ratio, summarise_calls
from svg2.checks import check_int, check_triple
from svg2.methods import METHODS, REFERENCE
from svg2.methods.joint import masked_dense_attention
from svg2.timing import Clock, median_ms


@dataclass
class Captured:
    layer: int
    step: int
    branch: int
    grid: tuple | None
    q: torch.Tensor   # (B, H, S, D)
    k: torch.Tensor
    v: torch.Tensor
    video: tuple | None = None           # (start, stop) of the video tokens in a joint (video + text) sequence
    key_mask: torch.Tensor | None = None  # (B, S) bool, False for padding text tokens

    def joint(self, device) -> dict:
        """The joint-sequence keywords of this call, its key mask on ``device``; none for a video-only call."""
        if self.video is None:
            return {}
        return dict(video=slice(*self.video), key_mask=None if self.key_mask is None else self.key_mask.to(device))


class CaptureMethod(METHODS[REFERENCE]):
    """Dense attention that keeps the inputs of the chosen (layer, step, branch) calls."""

    def __init__(self, layers, steps, branches):
        super().__init__()
        self.want = (set(layers), set(steps), set(branches))
        self.captured: list[Captured] = []

    def __call__(self, q, k, v, *, layer=0, branch=0, step=None, grid=None, video=None, key_mask=None):
        step = self.state.step if step is None else step
        layers, steps, branches = self.want
        if layer in layers and step in steps and branch in branches:
            self.captured.append(Captured(
                layer, step, branch, tuple(grid) if grid else None, *(t.detach().cpu().clone() for t in (q, k, v)),
                video=(video.start, video.stop) if video is not None else None,
                key_mask=key_mask.detach().cpu().clone() if key_mask is not None else None))
        return super().__call__(q, k, v, layer=layer, branch=branch, step=step, grid=grid, video=video,
                                key_mask=key_mask)


@dataclass
class AttentionWorkload:
    source: str = "model"                  # 'model' (captured) or 'synthetic'
    layers: list = field(default_factory=lambda: [1])
    capture_steps: list = field(default_factory=lambda: [0, 1])
    branches: list = field(default_factory=lambda: [0])
    # generation settings of the captured run
    steps: int = 10
    height: int = 64
    width: int = 64
    frames: int = 9
    guidance_scale: float = 5.0
    prompts: list = field(default_factory=list)
    num_prompts: int | None = 1
    seeds: list = field(default_factory=lambda: [0])
    # synthetic inputs (eval.synthetic.structured_qkv): a named model shape or explicit heads, grid, head_dim
    shape: str | None = None
    heads: int = 2
    grid: list = field(default_factory=lambda: [4, 16, 16])   # latent (frames, h, w): S = their product
    head_dim: int = 64
    centres: int = 64
    scale: float = 0.6             # larger: sharper attention, sparser budgets
    dtype: str = "float32"
    repeats: int = 3
    warmup: int = 1
    name: str = "attention"

    def __post_init__(self):
        if self.source not in ("model", "synthetic"):
            raise ValueError(f"workload.source={self.source!r}; expected 'model' or 'synthetic'")
        if self.shape is not None and self.shape not in SHAPES:
            raise ValueError(f"workload.shape={self.shape!r}; expected one of {sorted(SHAPES)} or null")
        check_generation(self)
        for name in ("heads", "head_dim", "centres"):
            check_int(f"workload.{name}", getattr(self, name), minimum=1)
        check_int("workload.repeats", self.repeats, hint="0: no timing")
        check_int("workload.warmup", self.warmup)
        check_triple("workload.grid", self.grid, what="(frames, h, w)")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"workload.dtype={self.dtype!r}; expected 'float32', 'bfloat16' or 'float16'")
        for name in ("layers", "capture_steps", "branches"):
            if not getattr(self, name):
                raise ValueError(f"workload.{name}={getattr(self, name)!r}; expected at least one")
            for x in getattr(self, name):
                check_int(f"workload.{name}", x)

    @property
    def needs_model(self) -> bool:
        return self.source == "model"

    def items(self) -> list[tuple[str, int]]:
        if self.source == "synthetic":
            size = self.shape or f"{self.heads}x{'x'.join(map(str, self.grid))}x{self.head_dim}"
            return prompt_items([f"synthetic:{size}"], None, self.seeds)
        return prompt_items(self.prompts, self.num_prompts, self.seeds)

    def geometry(self, model) -> dict:
        if self.source == "model":
            return model.geometry(self.frames, self.height, self.width)
        heads, grid, head_dim = self._synthetic_shape()
        return dict(tokens=math.prod(grid), grid=tuple(grid), heads=heads, head_dim=head_dim)

    def _synthetic_shape(self) -> tuple[int, tuple, int]:
        if self.shape is not None:
            s = SHAPES[self.shape]
            return s.heads, tuple(s.grid), s.head_dim
        return self.heads, tuple(self.grid), self.head_dim

    def check(self, metrics) -> None:
        pass

    def run(self, job: Job) -> dict:
        calls = (self.synthetic_calls(job.seed, job.device) if self.source == "synthetic"
                 else self.captured_calls(job.pipe, job.model, job.prompt, job.seed, job.device, job.cache / "attention"))
        return run_attention_item(self, calls, job.method, job.device)

    def identity(self) -> dict:
        keep = ("source", "layers", "capture_steps", "branches", "steps", "height", "width", "frames",
                "guidance_scale", "shape", "heads", "grid", "head_dim", "centres", "scale", "dtype")
        return {"name": self.name, **{k: getattr(self, k) for k in keep}}

    def synthetic_calls(self, seed: int, device: str) -> list[Captured]:
        from eval.synthetic import structured_qkv

        heads, grid, head_dim = self._synthetic_shape()
        calls = []
        for i, step in enumerate(self.capture_steps):
            q, k, v = structured_qkv(heads, grid, head_dim, scale=self.scale, centres=self.centres, seed=seed,
                                     dtype=getattr(torch, self.dtype), device=device)
            if i:  # later steps: the same semantic layout, slightly moved (what warm-started k-means sees)
                g = torch.Generator(device="cpu").manual_seed(seed + 1000 * i)
                q, k = (t + 0.05 * torch.randn(t.shape, generator=g).to(t) for t in (q, k))
            calls.append(Captured(self.layers[0], int(step), 0, tuple(grid), q, k, v))
        return calls

    def captured_calls(self, pipe, model, prompt: str, seed: int, device: str, cache: Path) -> list[Captured]:
        from eval.workloads.video import VideoWorkload
        from svg2.diffusers import apply, remove

        key = stable_key(model.identity(), self.identity(), prompt, seed, torch.device(device).type)
        path = Path(cache) / f"qkv-{key}.pt"
        if path.is_file():
            return [Captured(**c) for c in torch.load(path, weights_only=False)]
        video = VideoWorkload(self.steps, self.height, self.width, self.frames, self.guidance_scale, [prompt])
        capture = CaptureMethod(self.layers, self.capture_steps, self.branches)
        apply(pipe, capture)
        try:
            pipe(**video.call_kwargs(model, prompt, seed, device, self.steps))
        finally:
            remove(pipe)
        if not capture.captured:
            raise ValueError(f"no attention call matched layers={self.layers} steps={self.capture_steps} "
                             f"branches={self.branches} in a {self.steps}-step generation")
        buf = io.BytesIO()
        torch.save([c.__dict__ for c in capture.captured], buf)
        atomic_write(path, buf.getvalue())
        return capture.captured


def run_attention_item(workload: AttentionWorkload, calls: list[Captured], method, device: str) -> dict:
    """Score and time ``method`` on each captured call, in step order (so k-means warm-starts as in a
    generation): attention error against dense attention of the same call, and the plan's identification recall,
    block-mass estimation error and tile waste per head (``eval.metrics.attention.plan_quality``). Timing repeats
    run after the scored call, so they measure the warm-started (steady-state) cost, on a copy of the method state
    that is then discarded."""
    clock = Clock(device)
    dtype = getattr(torch, workload.dtype)
    method.reset(num_steps=workload.steps)
    method.record_plans = True
    errors, per_call, dense_ms, sparse_ms = [], [], [], []
    for c in sorted(calls, key=lambda c: (c.step, c.layer, c.branch)):
        q, k, v = (t.to(device, dtype) for t in (c.q, c.k, c.v))
        joint = c.joint(device)
        mask = joint.get("key_mask")

        def call():
            return method(q, k, v, layer=c.layer, branch=c.branch, grid=c.grid, **joint)

        ref = masked_dense_attention(q, k, v, mask, "auto")
        method.set_step(c.step)
        out = call()
        stats = method.stats[-1].as_row()
        errors.append((relative_l2(ref, out), cosine_error(ref, out)))
        heads = {}
        if method.last_plan is not None:
            video = joint.get("video", slice(None))
            heads = {f"{name}_heads": values.tolist() for name, values in plan_quality(
                q[:, :, video], k[:, :, video], method.last_plan).items()}
        if workload.repeats:
            saved_state, saved_stats = copy.deepcopy(method.state), list(method.stats)
            sparse_ms.append(median_ms(clock, call, workload.repeats, workload.warmup))
            method.state, method.stats = saved_state, saved_stats
            dense_ms.append(median_ms(clock, lambda: masked_dense_attention(q, k, v, mask, "auto"),
                                      workload.repeats, workload.warmup))
        per_call.append({**stats, "rel_l2": errors[-1][0], "cos_err": errors[-1][1], "shape": list(q.shape),
                         "call_ms": sparse_ms[-1] if sparse_ms else None,
                         "dense_ms": dense_ms[-1] if dense_ms else None, **heads})
    method.record_plans, method.last_plan = False, None
    row = summarise_calls([s.as_row() for s in method.stats])
    row.update(rel_l2=sum(e[0] for e in errors) / len(errors), cos_err=sum(e[1] for e in errors) / len(errors),
               timer=clock.label, attn_ms=sum(sparse_ms) if sparse_ms else None,
               attn_ms_dense=sum(dense_ms) if dense_ms else None,
               speedup_attn=ratio(sum(dense_ms), sum(sparse_ms)), flops_ratio=row["density"],  # speedup None untimed
               tokens=calls[0].q.shape[2], per_call=per_call)
    for name in ("recall", "mass_err", "waste"):  # means over calls and heads (NaN-free means; None if none)
        values = [x for call in per_call for x in call.get(f"{name}_heads", []) if x == x]
        row[name] = sum(values) / len(values) if values else None
    return row
