"""The harness entry point: compose, build, check, run, save, report.

    python -m eval.sweep                                   # the quick default sweep on this machine
    python -m eval.sweep -m method=svg2 method.top_p=0.8,0.9 method.num_q_clusters=8,16
    python -m eval.sweep sweep=wan_t2v_720p_paper model.path=/ckpt/Wan2.1-T2V-14B-Diffusers
    torchrun --nproc-per-node=2 -m eval.sweep parallel.world_size=2 ...   # one video over 2 GPUs (eval/ranks.py)

One Hydra job runs either the one ``method`` given on the command line or, when none is, every entry of
``sweep.methods`` (each merged over ``conf/method/<name>.yaml``). Each (method config, prompt, seed) is one
row in ``results_dir``; finished rows are skipped, a failing row records its error and the sweep goes on.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from eval import ranks as parallel_ranks
from eval.config import build, method_configs
from eval.models import ModelConfig, resolve_device
from eval.ranks import Ranks
from eval.results import ResultStore, environment, stable_key
from eval.workloads.base import Job

try:  # submitit raises it in a SLURM task at its time limit when it will not requeue: the task ends, not the row
    from submitit.core.utils import UncompletedJobError as INTERRUPTED
except ImportError:
    INTERRUPTED = ()


def hardware(device: str) -> str:
    env = environment()
    return env["gpu"] if device.startswith("cuda") else f"CPU: {env['cpu']} ({env['cpu_count']} cores)"


def prefixed_columns(prefix: str, values: dict) -> dict:
    """``values`` as row columns '<prefix>.<name>', a list or tuple as its str (one scalar per cell)."""
    return {f"{prefix}.{k}": (str(v) if isinstance(v, (list, tuple)) else v) for k, v in values.items()}


def method_columns(method) -> dict:
    """What a row records of its method: the effective config values (``method.<field>``), its label, table
    order, budget-curve family and whether it is the reference. A family's configs differ only in the value of
    their budget (``family_key``: the config without its budget values, but with which budget knob is in use, so
    svg2's top-p and top-k curves are two)."""
    config = asdict(method.config)
    budgets = method.config.budget_fields
    family = {k: (v is not None if k in budgets else v) for k, v in config.items()}
    return dict(method=method.name, label=method.config.label(), order=method.order, reference=method.is_reference,
                family=method.config.family(), budget=method.config.budget_label(),
                family_key=stable_key(method.name, family), config_key=stable_key(method.name, config),
                **prefixed_columns("method", config))


@dataclass
class Summary:
    """What a job did: rows computed (ok / failed), rows skipped because they were already done, and the mean
    objective over its ok rows (the scalar a Hydra sweeper optimises)."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    claimed: int = 0              # rows another writer was computing (they are its to write)
    objective: float = float("nan")
    rank: int = 0                 # of a parallel job's ranks (rank 0 writes the rows and reports)

    def line(self) -> str:
        claimed = f", {self.claimed} left to other writers" if self.claimed else ""
        return f"{self.ok} ok, {self.failed} failed, {self.skipped} skipped (already done){claimed}"


def run(cfg: DictConfig, job_num: int | None = None) -> Summary:
    """Run every (method, prompt, seed) row of this job (with ``parallel.world_size`` > 1 and no launcher: start
    the ranks, after the static checks, and return rank 0's summary)."""
    with logging_quiet():
        if world_size(cfg) > 1 and not parallel_ranks.launched():
            job_device(cfg, job_num)  # bad input fails here, once, before any rank starts
            _setup(cfg, Ranks())
            # (the resolved values travel: Hydra's structured method nodes do not pickle)
            return parallel_ranks.spawn(world_size(cfg), _rank_run, OmegaConf.to_container(cfg, resolve=True), job_num)
        return _run(cfg, job_num)


def _rank_run(values: dict, job_num: int | None) -> Summary:
    return run(OmegaConf.create(values), job_num)


def world_size(cfg: DictConfig) -> int:
    value = cfg.get("parallel", {}).get("world_size", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"parallel.world_size={value!r}; expected a rank count >= 1")
    return value


def job_device(cfg: DictConfig, job_num: int | None) -> str:
    """The job's device: one GPU by Hydra job number, or, over several ranks, rank r's GPU (cuda:LOCAL_RANK)."""
    if world_size(cfg) == 1:
        return resolve_device(cfg.device, job_num)
    return parallel_ranks.rank_device(resolve_device(cfg.device), world_size(cfg))


def _setup(cfg: DictConfig, ranks: Ranks):
    """The job's workload, model, methods and items, checked against the model's configs (no weights load)."""
    world = world_size(cfg)
    workload = build(cfg.workload)
    if world > 1 and not getattr(workload, "sequence_parallel", False):
        raise ValueError(f"parallel.world_size={world} with workload={workload.name}; sequence parallelism runs "
                         "generations (workload=video)")
    model = ModelConfig(**model_values(cfg, required=workload.needs_model))
    methods = [build(m) for m in method_configs(cfg)]  # static config errors surface here, before any model work
    items = workload.items()
    workload.check(cfg.metrics)
    geometry = ranks.first(lambda: workload.geometry(model))  # model configs only; rank 0 may build the tiny model
    if world > 1:
        from svg2.parallel import Ulysses

        Ulysses(0, world).check_heads(geometry["heads"])
    for method in methods:
        method.check_shape(**geometry)
    return workload, model, methods, items


def _run(cfg: DictConfig, job_num: int | None) -> Summary:
    device = job_device(cfg, job_num)
    if torch.device(device).type == "cuda" and torch.device(device).index is not None:
        torch.cuda.set_device(torch.device(device))
    if device == "cpu" and cfg.get("cpu_threads"):
        torch.set_num_threads(cfg.cpu_threads)
    ranks = Ranks.join(world_size(cfg), device)
    workload, model, methods, items = _setup(cfg, ranks)
    store = ResultStore(cfg.results_dir, claim_stale_s=cfg.get("claim_stale_s"))
    cache = Path(cfg.cache_dir).expanduser()
    # what the row's numbers depend on beyond method, model, workload and item: how they are computed
    measured = {k: v for k, v in OmegaConf.to_container(cfg.metrics, resolve=True).items() if k != "frontier"}
    identity = dict(sweep=cfg.sweep.name, model=model.name, model_kind=model.kind, workload=workload.name,
                    **prefixed_columns("workload", {k: v for k, v in workload.identity().items() if k != "name"}),
                    **prefixed_columns("metrics", measured),
                    device=device, hardware=hardware(device), pid=os.getpid(), world_size=ranks.world_size,
                    **environment())
    # a parallel row is its own measurement (its timings); a single-process row keeps the key it always had
    parallel = [dict(world_size=ranks.world_size)] if ranks.world_size > 1 else []
    jobs = []
    for method in methods:
        for prompt, seed in items:
            key = stable_key(asdict(method.config), method.name, model.identity(), workload.identity(), measured,
                             prompt, seed, hardware(device), *parallel)
            jobs.append((key, method, prompt, seed))
    summary, objective = Summary(rank=ranks.rank), []
    done = set(ranks.agree(lambda: [key for key, *_ in jobs if store.finished(key)]))  # rank 0's view, on every rank
    if done and ranks.writer:
        print(f"{len(done)} of {len(jobs)} rows already done in {store.folder}: skipped")
    progress = Progress(len(jobs) - len(done), cfg.progress if ranks.writer else False)
    pipe = None
    for key, method, prompt, seed in jobs:
        if key in done:
            summary.skipped += 1
            objective.append(store.read(key).get(cfg.sweep.objective))
            continue
        what = f"{method.config.label()} | {prompt[:40]!r} seed {seed}"
        progress.start(what)
        # other writers into results_dir skip the key while this one computes it (rank 0 claims for all ranks)
        with store.claim(key) if ranks.writer else nullcontext() as claimed:
            other = ranks.agree(lambda: claimed)
            if other is not None:
                job = f" (SLURM job {other['slurm_job']})" if other.get("slurm_job") else ""
                progress.note(f"[{what}] skipped: being computed by {other.get('host')} pid {other.get('pid')}{job}")
                summary.claimed += 1
                continue
            if ranks.agree(lambda: store.finished(key)):  # finished by another writer since this one looked
                summary.skipped += 1
                objective.append(store.read(key).get(cfg.sweep.objective))
                continue
            if pipe is None and workload.needs_model:
                pipe = model.load(device)
                pipe.set_progress_bar_config(disable=True)
            job = Job(method, model, prompt, seed, device, cache, store.folder / "frames" / key, cfg.metrics, pipe,
                      ranks)
            row = {**method_columns(method), **identity, "prompt": prompt, "seed": seed,
                   **measure(workload, job, cfg)}
            if row["status"] == "ok":
                summary.ok += 1
                objective.append(row.get(cfg.sweep.objective))
            else:
                summary.failed += 1
            if ranks.writer:
                if not store.write(key, row):
                    progress.note(f"[{what}] computed twice: the row another writer finished first is kept")
                store.combine()
        progress.done(row, cfg.sweep.objective)
    progress.close()
    values = [v for v in objective if isinstance(v, (int, float))]
    summary.objective = sum(values) / len(values) if values else float("nan")
    return summary


def model_values(cfg: DictConfig, required: bool) -> dict:
    """The model group's values, with a one-line error for a required value left unset (``???``; a workload that
    never loads the model, such as synthetic attention, needs none)."""
    for key in ("path", "image") if required else ():
        if OmegaConf.is_missing(cfg.model, key):
            raise ValueError(f"model.{key} is required for model={cfg.model.name}: pass model.{key}=<path>"
                             + (" (the local diffusers directory)" if key == "path" else " (the conditioning image)"))
    return OmegaConf.to_container(cfg.model, resolve=True)


class Progress:
    """One bar over the rows on a terminal; one plain line per row elsewhere (log files); nothing when off."""

    def __init__(self, total: int, mode):
        on = mode in ("auto", None) or bool(mode)  # progress: auto / true, or false (quiet)
        terminal = sys.stderr.isatty()
        self.bar = tqdm(total=total, unit="row", dynamic_ncols=True) if on and terminal else None
        self.lines = on and not terminal
        self.total, self.count = total, 0

    def start(self, text: str) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.set_description(text[:60])
        elif self.lines:
            print(f"[{self.count}/{self.total}] {text}: running", flush=True)

    def done(self, row: dict, objective: str) -> None:
        value = row.get(objective)
        result = row["status"] if row["status"] != "ok" else f"ok, {objective} {value:.4g}" if isinstance(
            value, (int, float)) else "ok"
        if self.bar is not None:
            self.bar.update(1)
        elif self.lines:
            print(f"[{self.count}/{self.total}] {result} ({row['wall_s']:.0f} s)", flush=True)

    def note(self, text: str) -> None:
        (self.bar.write if self.bar is not None else print)(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Drop(logging.Filter):
    """Drops known noise of diffusers at the embedded model's size (every other warning still shows)."""

    NOISE = ("has to be divisible by", "Expected types for")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.NOISE)


@contextmanager
def logging_quiet():
    """Drops ``num_frames - 1 has to be divisible by 1`` (once per pipeline call: the embedded VAE has no temporal
    compression, so WanPipeline "rounds" every frame count) and the text-encoder type notice of loading, and the
    libraries' loading bars (the sweep has its own progress)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    drop = _Drop()
    handlers = diffusers_logging.get_logger().handlers  # (configures the library's root handler first)
    libraries = [lib for lib in (diffusers_logging, transformers_logging) if lib.is_progress_bar_enabled()]
    for h in handlers:
        h.addFilter(drop)
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(drop)
        for lib in libraries:
            lib.enable_progress_bar()


def measure(workload, job: Job, cfg: DictConfig) -> dict:
    """The row's measurements with status 'ok', or status 'error' with the error (the sweep goes on)."""
    start = time.time()
    try:
        job.method.reset()
        row = {**workload.run(job), "status": "ok"}
    except Exception as e:  # noqa: BLE001 - any failure of one row (out of memory, a bad config) is recorded
        if cfg.get("raise_errors") or isinstance(e, INTERRUPTED) or job.ranks.world_size > 1:
            raise  # (ranks cannot go on in step after one of them failed: see eval/ranks.py)
        row = dict(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=8))
        tqdm.write(f"[{job.method.config.label()} | {job.prompt!r} seed {job.seed}] failed: {row['error']}",
                   file=sys.stderr)
        if job.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return {**row, "wall_s": time.time() - start, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        summary = run(cfg, job_num=hc.job.num if multirun else None)
    except (ValueError, TypeError, FileNotFoundError) as e:
        if cfg.raise_errors or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"eval.sweep: {e}", file=sys.stderr)  # bad input: one line, before any expensive work
        sys.exit(2)
    if summary.rank:  # a parallel job's other ranks: rank 0 prints and reports
        return summary.objective
    print(summary.line())
    if not multirun:
        if cfg.report:
            from eval.frontier import report

            report(cfg.results_dir, cfg.metrics.frontier)
        if summary.failed and not cfg.allow_failures:
            sys.exit(1)
    return summary.objective


if __name__ == "__main__":
    main()
