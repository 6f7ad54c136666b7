"""The harness entry point: compose, build, check, run, save, report.

    python -m eval.sweep                                   # the quick default sweep on this machine
    python -m eval.sweep -m method=svg2 method.top_p=0.8,0.9 method.num_q_clusters=8,16
    python -m eval.sweep sweep=wan_t2v_720p model.path=/ckpt/Wan2.1-T2V-14B-Diffusers

One Hydra job runs either the one ``method`` given on the command line or, when none is, every entry of
``sweep.methods`` (each merged over ``conf/method/<name>.yaml``). Each (method config, prompt, seed) is one
row in ``results_dir``; finished rows are skipped, a failing row records its error and the sweep goes on.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import asdict
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from eval.config import build, method_configs
from eval.models import ModelConfig, resolve_device
from eval.results import ResultStore, environment, stable_key
from eval.workloads.base import Job


def hardware(device: str) -> str:
    env = environment()
    return env["gpu"] if device.startswith("cuda") else f"CPU: {env['cpu']} ({env['cpu_count']} cores)"


def method_columns(method) -> dict:
    """What a row records of its method: the effective config values (``method.<field>``), its label, table
    order, budget-curve family and whether it is the reference."""
    config = asdict(method.config)
    family = {k: v for k, v in config.items() if k not in method.config.budget_fields}
    return dict(method=method.name, label=method.config.label(), order=method.order, reference=method.is_reference,
                family=method.config.family(), family_key=stable_key(method.name, family),
                config_key=stable_key(method.name, config),
                **{f"method.{k}": (str(v) if isinstance(v, (list, tuple)) else v) for k, v in config.items()})


def run(cfg: DictConfig, job_num: int | None = None) -> float:
    """Run every (method, prompt, seed) row of this job; returns the mean objective over its rows."""
    device = resolve_device(cfg.device, job_num)
    if torch.device(device).type == "cuda" and torch.device(device).index is not None:
        torch.cuda.set_device(torch.device(device))
    if device == "cpu" and cfg.get("cpu_threads"):
        torch.set_num_threads(cfg.cpu_threads)
    model = ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))
    workload = instantiate(cfg.workload, _convert_="all")
    methods = [build(m) for m in method_configs(cfg)]  # static config errors surface here, before any model work
    items = workload.items()
    geometry = workload.geometry(model)  # model configs only: no weights are loaded yet
    for method in methods:
        method.check_shape(**geometry)
    store = ResultStore(cfg.results_dir)
    cache = Path(cfg.cache_dir).expanduser()
    identity = dict(sweep=cfg.sweep.name, model=model.name, model_kind=model.kind, workload=workload.name,
                    **{f"workload.{k}": (str(v) if isinstance(v, (list, tuple)) else v)
                       for k, v in workload.identity().items() if k != "name"},
                    device=device, hardware=hardware(device), **environment())
    pipe, objective = None, []
    for method in tqdm(methods, desc="jobs", disable=not cfg.progress, position=0):
        columns = method_columns(method)
        for prompt, seed in tqdm(items, desc=columns["label"], disable=not cfg.progress, position=1, leave=False):
            key = stable_key(asdict(method.config), columns["method"], model.identity(), workload.identity(), prompt,
                             seed, hardware(device))
            if store.finished(key):
                objective.append(store.read(key).get(cfg.sweep.objective))
                continue
            if pipe is None and workload.needs_model:
                pipe = model.load(device)
                pipe.set_progress_bar_config(disable=not cfg.progress, leave=False, desc="steps", position=2)
            job = Job(method, model, prompt, seed, device, cache, store.folder / "frames" / key, cfg.metrics, pipe)
            row = {**columns, **identity, "prompt": prompt, "seed": seed, **measure(workload, job, cfg)}
            if row["status"] == "ok":
                objective.append(row.get(cfg.sweep.objective))
            store.write(key, row)
            store.combine()
    values = [v for v in objective if isinstance(v, (int, float))]
    return sum(values) / len(values) if values else float("nan")


def measure(workload, job: Job, cfg: DictConfig) -> dict:
    """The row's measurements with status 'ok', or status 'error' with the error (the sweep goes on)."""
    start = time.time()
    try:
        job.method.reset()
        row = {**workload.run(job), "status": "ok"}
    except Exception as e:  # noqa: BLE001 - any failure of one row (out of memory, a bad config) is recorded
        if cfg.get("raise_errors"):
            raise
        row = dict(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=8))
        tqdm.write(f"[{job.method.config.label()} | {job.prompt!r} seed {job.seed}] failed: {row['error']}")
        if job.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return {**row, "wall_s": time.time() - start, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    value = run(cfg, job_num=hc.job.num if multirun else None)
    if not multirun and cfg.report:
        from eval.frontier import report

        report(cfg.results_dir, cfg.metrics.frontier)
    return value


if __name__ == "__main__":
    main()
