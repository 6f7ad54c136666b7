"""The one sparse-attention stack every method shares.

A method differs only in how it plans a call (steps 1-3: cluster, permute, select blocks); executing a
plan (permute q/k/v, variable-block sparse attention, un-permute the output) is common code. State
across calls lives in an explicit ``AttentionState`` keyed by (layer, CFG branch) and is reset per
generation.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch

from svg2.checks import check_finite, check_int, check_qkv, is_capturing
from svg2.methods.joint import check_joint, extend_plan, masked_dense_attention
from svg2.plan import Plan, execute_plan
from svg2.timing import StageTimer


def dense_step_count(dense_steps: float, num_steps: int | None, rounding: str = "ceil") -> float:
    """The warm-up steps run dense in a generation of ``num_steps``: ``dense_steps`` of them when it is a fraction
    in (0, 1), rounded by ``rounding`` ('ceil' or 'floor'); otherwise ``dense_steps`` itself, a step count
    (``num_steps`` may then be None)."""
    if 0 < dense_steps < 1:
        return (math.ceil if rounding == "ceil" else math.floor)(dense_steps * num_steps)
    return dense_steps


@dataclass
class MethodConfig:
    """What every method shares: the dense warm-up and how calls run. A method's config subclasses it; the
    dataclass is the only source of its defaults (the harness's Hydra schema is generated from it)."""

    method: ClassVar[str] = ""                  # the registered method's name (set by register_method)
    budget_fields: ClassVar[tuple[str, ...]] = ()  # knobs that move a config along its budget curve

    dense_steps: float = 0      # first denoising steps run dense: a count, or a fraction (< 1) of num_steps
    dense_layers: int = 0       # first layers run dense
    dense_rounding: str = "ceil"  # a fractional dense_steps covers ceil(f*steps) steps; 'floor': the reference's
    #                               threshold on the scheduler's timesteps, floor(f*steps)
    dense_backend: str = "auto"  # SDPA backend for dense calls; 'auto' = fastest available
    check_finite: bool = True   # reject NaN/inf inputs (synchronises; skipped during CUDA graph capture)
    profile: bool = True        # per-stage timings in the call statistics

    def family(self) -> str:
        """The structural knobs that tell this config's budget curve from the method's others ('' if none)."""
        return ""

    def budget_label(self) -> str:
        """The budget part of the label ('' for methods without one)."""
        return ""

    def label(self) -> str:
        """Short label for tables and plots, e.g. 'svg2 QC16/KC64 p0.9'."""
        return " ".join(p for p in (self.method, self.family(), self.budget_label()) if p)


@dataclass
class LayerState:
    """What a method keeps for one (layer, CFG branch) key, and the call it is serving."""

    q_centroids: torch.Tensor | None = None  # (N, QC, D) float32
    k_centroids: torch.Tensor | None = None  # (N, KC, D) float32
    calls: int = 0
    layer: int = 0                           # of the call being planned (methods with per-layer rules read them)
    step: int = 0
    heads: tuple[int, int] | None = None     # (first, total): the call holds heads first.. of total (a rank's
    #                                          share under sequence parallelism); None: all of them


@dataclass
class AttentionState:
    """Everything a method carries between calls of one generation."""

    layers: dict[tuple[int, int], LayerState] = field(default_factory=dict)
    step: int = 0                 # current denoising step, set by the pipeline
    num_steps: int | None = None  # denoising steps of this generation (for fractional dense_steps)

    def layer(self, layer: int, branch: int) -> LayerState:
        return self.layers.setdefault((layer, branch), LayerState())


@dataclass
class CallStats:
    method: str
    layer: int
    branch: int
    step: int
    ran_dense: bool               # the call ran dense attention (a dense method, or the warm-up steps and layers)
    density: Any                  # float, or a device tensor resolved by as_row (no sync at call time)
    kmeans_iters: int
    timer: StageTimer | None = None

    def as_row(self) -> dict:
        density = self.density
        if isinstance(density, torch.Tensor):
            density = float(density.double().mean())
        row = {k: getattr(self, k) for k in ("method", "layer", "branch", "step", "ran_dense", "kmeans_iters")}
        row["density"] = density
        for name, ms in (self.timer.resolve() if self.timer else {}).items():
            row[f"ms_{name}"] = ms
        return row


class AttentionMethod:
    """``method(q, k, v, layer=, branch=, step=, grid=) -> out`` on (B, H, S, D), with per-call stats.

    A method module subclasses this, names it, gives it a Config dataclass and a ``plan``, and registers it
    (``@register_method``); ``order`` places it in tables (the reference first).
    """

    name: ClassVar[str] = "base"
    Config: ClassVar[type] = MethodConfig
    order: ClassVar[int] = 100
    presets: ClassVar[dict[str, dict]] = {}  # eval.shapes name -> the release's config for that model

    def __init__(self, config: MethodConfig | None = None, **overrides):
        if config is None:
            config = self.Config(**overrides)
        elif overrides:
            config = type(config)(**{**asdict(config), **overrides})
        self.config = config
        self.validate_config()
        self.state = AttentionState()
        self.stats: list[CallStats] = []
        self.record_plans = False      # keep each sparse call's plan over the video tokens in last_plan (measuring)
        self.last_plan: Plan | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    @property
    def is_reference(self) -> bool:
        """True for the dense reference itself (its generation is the one every row is scored against)."""
        return False

    def validate_config(self) -> None:
        """Static checks when the config is built; errors name the value and what was expected."""
        c = self.config
        if isinstance(c.dense_steps, bool) or not isinstance(c.dense_steps, (int, float)) or c.dense_steps < 0:
            raise ValueError(f"dense_steps={c.dense_steps!r}; expected a step count or a fraction of the steps, >= 0")
        check_int("dense_layers", c.dense_layers)
        if c.dense_rounding not in ("ceil", "floor"):
            raise ValueError(f"dense_rounding={c.dense_rounding!r}; expected 'ceil' or 'floor'")

    def check_shape(self, *, tokens: int, grid: tuple[int, int, int] | None, heads: int, head_dim: int) -> None:
        """Shape checks a harness runs once the model's config is read, before any weights load; ``__call__``
        runs them again before each plan (``plan`` itself can assume a valid shape)."""

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
        if 0 < c.dense_steps < 1 and self.state.num_steps is None:
            raise ValueError(
                f"dense_steps={c.dense_steps} is a fraction of the denoising steps; call reset(num_steps=...) first")
        return step < dense_step_count(c.dense_steps, self.state.num_steps, c.dense_rounding)

    def state_key(self, layer: int, branch: int) -> tuple[int, int]:
        """Which state a call reads and updates: one per (layer, CFG branch)."""
        return layer, branch

    def __call__(self, q, k, v, *, layer: int = 0, branch: int = 0, step: int | None = None,
                 grid: tuple[int, int, int] | None = None, video: slice | None = None,
                 key_mask: torch.Tensor | None = None, heads: tuple[int, int] | None = None) -> torch.Tensor:
        """``video``: the tokens the method plans (default: all); any others (prompt tokens of joint-attention
        models) attend and are attended densely. ``key_mask``: (B, S) bool, False for padding keys nobody attends.
        ``heads``: (first, total) when q/k/v hold heads first..first+H of a call over ``total`` heads (a rank's share
        under ``svg2.parallel``): seeded choices are drawn as for those heads of the whole call, so the plan is the
        one a single process makes."""
        check_qkv(q, k, v)
        b, h, s, _ = q.shape
        if heads is not None and not (0 <= heads[0] and heads[0] + h <= heads[1]):
            raise ValueError(f"heads={heads} with {h} heads in q; expected (first, total) with first + {h} <= total")
        joint = video is not None or key_mask is not None
        if joint:
            video = check_joint(video, key_mask, b, s)
        capturing = is_capturing(q)
        step = self.state.step if step is None else step
        timer = StageTimer(q.device, enabled=self.config.profile and not capturing)
        part = tuple(t[:, :, video] for t in (q, k, v)) if joint else (q, k, v)
        layer_state = self.state.layer(*self.state_key(layer, branch))
        layer_state.layer, layer_state.step, layer_state.heads = layer, step, heads
        if self.runs_dense(layer, step):
            iters = self.observe_dense(*part, layer, layer_state, timer)
            self.last_plan = None
            with timer.stage("attend"):
                out = masked_dense_attention(q, k, v, key_mask, self.config.dense_backend)
            density, ran_dense = 1.0, True
        else:
            if self.config.check_finite and not capturing:
                for name, t in zip("qkv", part):
                    check_finite(name, t)
            self.check_shape(tokens=part[0].shape[2], grid=grid, heads=h if heads is None else heads[1],
                             head_dim=q.shape[3])
            plan = self.plan(*part, layer_state, grid, timer)
            self.last_plan = plan if self.record_plans else None
            if joint:
                with timer.stage("select"):
                    plan = extend_plan(plan, b, h, s, video, key_mask)
            out = execute_plan(q, k, v, plan, timer)
            density, iters, ran_dense = plan.block_map.density(), plan.kmeans_iters, False
        self.stats.append(CallStats(self.name, layer, branch, step, ran_dense, density, iters, timer))
        return out

    def plan(self, q, k, v, layer_state: LayerState, grid, timer: StageTimer) -> Plan:
        raise NotImplementedError

    def observe_dense(self, q, k, v, layer: int, layer_state: LayerState, timer: StageTimer) -> int:
        """Called on the calls the warm-up runs dense (video tokens only); a method may update its state there.
        Returns the k-means iterations it ran (none by default)."""
        return 0
