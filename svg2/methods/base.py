"""The one sparse-attention stack every method shares.

A method differs only in how it plans a call (steps 1-3: cluster, permute, select blocks); executing a
plan (permute q/k/v, variable-block sparse attention, un-permute the output) is common code. State
across calls lives in an explicit ``AttentionState`` keyed by (layer, CFG branch) and is reset per
generation.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from svg2.attention import block_sparse_attention
from svg2.blocks import BlockMap
from svg2.checks import check_finite, check_qkv, is_capturing, kernel_covers
from svg2.methods.joint import check_joint, extend_plan, masked_dense_attention
from svg2.permute import Permutation, permute, unpermute
from svg2.timing import StageTimer


@dataclass
class MethodConfig:
    dense_steps: float = 0      # first denoising steps run dense: a count, or a fraction (< 1) of num_steps
    dense_layers: int = 0       # first layers run dense
    dense_backend: str = "auto"  # SDPA backend for dense calls; 'auto' = fastest available
    check_finite: bool = True   # reject NaN/inf inputs (synchronises; skipped during CUDA graph capture)
    profile: bool = True        # per-stage timings in the call statistics


@dataclass
class LayerState:
    q_centroids: torch.Tensor | None = None  # (N, QC, D) float32
    k_centroids: torch.Tensor | None = None  # (N, KC, D) float32
    calls: int = 0


@dataclass
class AttentionState:
    """Everything a method carries between calls of one generation."""

    layers: dict[tuple[int, int], LayerState] = field(default_factory=dict)
    step: int = 0                 # current denoising step, set by the pipeline
    num_steps: int | None = None  # denoising steps of this generation (for fractional dense_steps)

    def layer(self, layer: int, branch: int) -> LayerState:
        return self.layers.setdefault((layer, branch), LayerState())


@dataclass
class Plan:
    """Steps 1-3 of a call: token permutations (None = identity) and the block map."""

    block_map: BlockMap
    q_perm: Permutation | None = None
    k_perm: Permutation | None = None
    kmeans_iters: int = 0


@dataclass
class CallStats:
    method: str
    layer: int
    branch: int
    step: int
    dense: bool
    density: Any                  # float, or a device tensor resolved by as_row (no sync at call time)
    kmeans_iters: int
    timer: StageTimer | None = None

    def as_row(self) -> dict:
        density = self.density
        if isinstance(density, torch.Tensor):
            density = float(density.double().mean())
        row = {k: getattr(self, k) for k in ("method", "layer", "branch", "step", "dense", "kmeans_iters")}
        row["density"] = density
        for name, ms in (self.timer.resolve() if self.timer else {}).items():
            row[f"ms_{name}"] = ms
        return row


class AttentionMethod:
    """``method(q, k, v, layer=, branch=, step=, grid=) -> out`` on (B, H, S, D), with per-call stats."""

    name = "base"
    Config = MethodConfig

    def __init__(self, config: MethodConfig | None = None, **overrides):
        if config is None:
            config = self.Config(**overrides)
        elif overrides:
            config = type(config)(**{**asdict(config), **overrides})
        self.config = config
        self.validate_config()
        self.state = AttentionState()
        self.stats: list[CallStats] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    def validate_config(self) -> None:
        c = self.config
        if c.dense_steps < 0 or c.dense_layers < 0:
            raise ValueError(f"dense_steps={c.dense_steps!r}, dense_layers={c.dense_layers!r}; expected >= 0")

    def reset(self, num_steps: int | None = None) -> None:
        """Start a new generation: drop centroid caches, step counter and statistics."""
        self.state = AttentionState(num_steps=num_steps)
        self.stats = []

    def set_step(self, step: int) -> None:
        self.state.step = step

    def runs_dense(self, layer: int, step: int) -> bool:
        c = self.config
        if layer < c.dense_layers:
            return True
        dense_steps = c.dense_steps
        if 0 < dense_steps < 1:
            if self.state.num_steps is None:
                raise ValueError(
                    f"dense_steps={dense_steps} is a fraction of the denoising steps; call reset(num_steps=...) first")
            dense_steps = math.ceil(dense_steps * self.state.num_steps)
        return step < dense_steps

    def __call__(self, q, k, v, *, layer: int = 0, branch: int = 0, step: int | None = None,
                 grid: tuple[int, int, int] | None = None, video: slice | None = None,
                 key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``video``: the tokens the method plans (default: all); any others (prompt tokens of joint-attention
        models) attend and are attended densely. ``key_mask``: (B, S) bool, False for padding keys nobody attends."""
        check_qkv(q, k, v)
        b, h, s, _ = q.shape
        joint = video is not None or key_mask is not None
        if joint:
            video = check_joint(video, key_mask, b, s)
        capturing = is_capturing(q)
        step = self.state.step if step is None else step
        timer = StageTimer(q.device, enabled=self.config.profile and not capturing)
        if self.runs_dense(layer, step):
            with timer.stage("attend"):
                out = masked_dense_attention(q, k, v, key_mask, self.config.dense_backend)
            density, iters, dense = 1.0, 0, True
        else:
            part = tuple(t[:, :, video] for t in (q, k, v)) if joint else (q, k, v)
            if self.config.check_finite and not capturing:
                for name, t in zip("qkv", part):
                    check_finite(name, t)
            plan = self.plan(*part, self.state.layer(layer, branch), grid, timer)
            if joint:
                with timer.stage("select"):
                    plan = extend_plan(plan, b, h, s, video, key_mask)
            out = execute_plan(q, k, v, plan, timer)
            density, iters, dense = plan.block_map.density(), plan.kmeans_iters, False
        self.stats.append(CallStats(self.name, layer, branch, step, dense, density, iters, timer))
        return out

    def plan(self, q, k, v, layer_state: LayerState, grid, timer: StageTimer) -> Plan:
        raise NotImplementedError


def execute_plan(q, k, v, plan: Plan, timer: StageTimer) -> torch.Tensor:
    """Permute → variable-block sparse attention → un-permute the output (values follow the keys).

    On the Triton path only k and v are permuted: the kernel reads q and writes the output through the
    query order (one gather per query tile), so q's permuted copy and the output's inverse pass are skipped.
    """
    b, h, s, d = q.shape
    flat = [t.reshape(b * h, s, d) for t in (q, k, v)]
    on_kernel = all(kernel_covers(t) for t in flat)
    with timer.stage("permute"):
        kp, vp = ((permute(t, plan.k_perm) for t in flat[1:]) if plan.k_perm is not None else flat[1:])
        qp = flat[0] if on_kernel or plan.q_perm is None else permute(flat[0], plan.q_perm)
    q_order = plan.q_perm.order if on_kernel and plan.q_perm is not None else None
    with timer.stage("attend"):
        out = block_sparse_attention(*(t.reshape(b, h, s, d) for t in (qp, kp, vp)), plan.block_map, q_order=q_order)
    if not on_kernel:
        with timer.stage("unpermute"):
            if plan.q_perm is not None:
                out = unpermute(out.reshape(b * h, s, d), plan.q_perm).reshape(b, h, s, d)
    return out


class DenseMethod(AttentionMethod):
    """Full attention with the fastest SDPA backend: the quality and speed baseline."""

    name = "dense"

    def runs_dense(self, layer: int, step: int) -> bool:
        return True
