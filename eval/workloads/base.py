"""The protocol every workload follows, and the job it runs.

A workload lists its items (prompt, seed), says what identifies its rows (``identity``), whether it needs the
model's pipeline (``needs_model``) and the attention geometry its calls will have (``geometry``: what methods
check before any weights load), checks the metrics it will compute (``check``), and turns one ``Job`` into the
row's measurements (``run``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from eval.models import ModelConfig
from eval.ranks import Ranks
from svg2.checks import check_int


@dataclass
class Job:
    """One row to compute: a method on one item of a workload."""

    method: Any                 # the built svg2 AttentionMethod
    model: ModelConfig
    prompt: str
    seed: int
    device: str
    cache: Path                 # dense references, captured Q/K/V
    artifacts: Path             # path stem of this row's files (its comparison GIF), named after its key
    metrics: Any                # the `metrics` config group
    pipe: Any = None            # the loaded pipeline, when the workload needs one
    ranks: Ranks = Ranks()      # the ranks that generate together (parallel.world_size); one process by default

    def artifact(self, suffix: str) -> Path:
        return self.artifacts.with_name(self.artifacts.name + suffix)


class Workload(Protocol):
    name: str

    @property
    def needs_model(self) -> bool: ...

    def items(self) -> list[tuple[str, int]]: ...

    def identity(self) -> dict: ...

    def geometry(self, model: ModelConfig) -> dict: ...

    def check(self, metrics) -> None: ...  # errors in the metrics config, before any work


    def run(self, job: Job) -> dict: ...


def prompt_items(prompts, num_prompts, seeds) -> list[tuple[str, int]]:
    """(prompt, seed) of the first ``num_prompts`` prompts (all when None) times the seeds; errors on none."""
    prompts = list(prompts)[:num_prompts] if num_prompts else list(prompts)
    if not prompts:
        raise ValueError("workload has no prompts; set model.prompts or workload.prompts")
    if not list(seeds):
        raise ValueError("workload.seeds=[]; expected at least one seed")
    return [(p, int(s)) for p in prompts for s in seeds]


def check_generation(w) -> None:
    """The generation settings every workload shares: positive steps and sizes, a number for guidance."""
    for name in ("steps", "height", "width", "frames"):
        check_int(f"workload.{name}", getattr(w, name), minimum=1)
    if isinstance(w.guidance_scale, bool) or not isinstance(w.guidance_scale, (int, float)) or w.guidance_scale < 0:
        raise ValueError(f"workload.guidance_scale={w.guidance_scale!r}; expected a number >= 0")
    if w.num_prompts is not None:
        check_int("workload.num_prompts", w.num_prompts, minimum=1, hint="or null for every prompt")
