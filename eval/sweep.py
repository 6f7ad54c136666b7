"""The harness entry point: compose, build, run, save, report.

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
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm.auto import tqdm

from eval.models import ModelConfig, resolve_device
from eval.results import ResultStore, environment, stable_key

CONF = Path(__file__).resolve().parent.parent / "conf"
try:  # submitit raises it in a SLURM task at its time limit when it will not requeue: the task ends, not the row
    from submitit.core.utils import UncompletedJobError as INTERRUPTED
except ImportError:
    INTERRUPTED = ()


def method_configs(cfg: DictConfig) -> list[dict]:
    """Resolved method configs of this job: the ``method`` group if chosen, else ``sweep.methods``."""
    if cfg.get("method") is not None:
        return [OmegaConf.to_container(cfg.method, resolve=True)]
    entries = cfg.sweep.get("methods") or []
    if not entries:
        raise ValueError("no method to run: pass method=<name> or choose a sweep preset with sweep.methods")
    choices = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
    out = []
    for entry in entries:
        name = entry.get("name")
        if name not in choices:
            raise ValueError(f"sweep.methods entry {OmegaConf.to_container(entry)} has name={name!r}; "
                             f"expected one of {choices}")
        root = cfg.copy()
        with open_dict(root):
            root.method = OmegaConf.merge(OmegaConf.load(CONF / "method" / f"{name}.yaml"), entry)
        out.append(OmegaConf.to_container(root.method, resolve=True))
    return out


def method_label(m: dict) -> str:
    if m.get("label"):
        return m["label"]
    parts = [m["name"]]
    if m["name"] == "svg2":
        parts.append(f"QC{m['num_q_clusters']}/KC{m['num_k_clusters']}")
    if m["name"] == "positional":
        parts.append(f"tile{tuple(m['tile'])}" if m.get("tile") else f"b{m['block_size']}")
    if m["name"] != "dense":
        parts.append(f"p{m['top_p']}" if m.get("top_p") is not None else f"k{m['top_k']}")
    return " ".join(parts)


def build(m: dict):
    """The method object from a resolved config (``_target_`` is ``svg2.methods.build_method``)."""
    try:
        return instantiate({k: v for k, v in m.items() if k != "label"}, _convert_="all")
    except InstantiationException as e:  # show the method's own error (it names the bad value)
        if isinstance(e.__cause__, (ValueError, TypeError)):
            raise e.__cause__ from None
        raise


def hardware(device: str) -> str:
    env = environment()
    return env["gpu"] if device.startswith("cuda") else f"CPU: {env['cpu']} ({env['cpu_count']} cores)"


def run(cfg: DictConfig, job_num: int | None = None) -> float:
    """Run every (method, prompt, seed) row of this job; returns the mean objective over its rows."""
    device = resolve_device(cfg.device, job_num)
    if torch.device(device).type == "cuda" and torch.device(device).index is not None:
        torch.cuda.set_device(torch.device(device))
    if device == "cpu" and cfg.get("cpu_threads"):
        torch.set_num_threads(cfg.cpu_threads)
    model = ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))
    workload = instantiate(cfg.workload, _convert_="all")
    methods = method_configs(cfg)
    for m in methods:  # config errors surface before any model is loaded
        build(m)
    store = ResultStore(cfg.results_dir, claim_stale_s=cfg.get("claim_stale_s"))
    items = workload.items()
    if getattr(workload, "source", "model") != "synthetic":
        model.prepare()
    pipe = None
    objective = []
    for m in tqdm(methods, desc="jobs", disable=not cfg.progress, position=0):
        config = {k: v for k, v in m.items() if k not in ("_target_", "label")}
        for prompt, seed in tqdm(items, desc=method_label(m), disable=not cfg.progress, position=1, leave=False):
            key = stable_key(config, model.identity(), workload.identity(), prompt, seed, hardware(device))
            if store.finished(key):
                objective.append(store.read(key).get(cfg.sweep.objective))
                continue
            with store.claim(key) as other:  # other writers into results_dir skip the key while we compute it
                if other is not None:
                    job = f" (SLURM job {other['slurm_job']})" if other.get("slurm_job") else ""
                    tqdm.write(f"[{method_label(m)} | {prompt!r} seed {seed}] skipped: being computed by "
                               f"{other.get('host')} pid {other.get('pid')}{job}")
                    continue
                if store.finished(key):  # finished by another writer since we looked
                    objective.append(store.read(key).get(cfg.sweep.objective))
                    continue
                if pipe is None and not getattr(workload, "source", "model") == "synthetic":
                    pipe = model.load(device)
                    pipe.set_progress_bar_config(disable=not cfg.progress, leave=False, desc="steps", position=2)
                row = {**identity_columns(cfg, m, model, workload, prompt, seed, device),
                       **measure_row(workload, pipe, m, model, prompt, seed, device, cfg, store, key)}
                if row["status"] == "ok":
                    objective.append(row.get(cfg.sweep.objective))
                if not store.write(key, row):
                    tqdm.write(f"[{method_label(m)} | {prompt!r} seed {seed}] computed twice: the row another "
                               "writer finished first is kept")
                store.combine()
    values = [v for v in objective if isinstance(v, (int, float))]
    return sum(values) / len(values) if values else float("nan")


def identity_columns(cfg: DictConfig, m: dict, model: ModelConfig, workload, prompt: str, seed: int,
                     device: str) -> dict:
    """What identifies a row: every method and workload value, model, prompt, seed, hardware, versions, commit."""
    def flat(prefix, d):
        return {f"{prefix}.{k}": (str(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()
                if k not in ("name", "_target_", "label")}

    config = {k: v for k, v in m.items() if k not in ("_target_", "label")}
    return dict(sweep=cfg.sweep.name, label=method_label(m), method=m["name"], config_key=stable_key(config),
                **flat("method", m),
                model=model.name, model_kind=model.kind, workload=workload.name, **flat("workload", workload.identity()),
                prompt=prompt, seed=seed, device=device, hardware=hardware(device), **environment())


def measure_row(workload, pipe, m: dict, model: ModelConfig, prompt: str, seed: int, device: str, cfg: DictConfig,
                store: ResultStore, key: str) -> dict:
    """The row's measurements with status 'ok', or status 'error' with the error (the sweep goes on)."""
    start = time.time()
    try:
        row = measure(workload, pipe, build(m), model, prompt, seed, device, Path(cfg.cache_dir).expanduser(), cfg,
                      store, key)
        row["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - any failure of one row (out of memory, a bad config) is recorded
        if cfg.get("raise_errors") or isinstance(e, INTERRUPTED):
            raise
        row = dict(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=8))
        tqdm.write(f"[{method_label(m)} | {prompt!r} seed {seed}] failed: {row['error']}")
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return {**row, "wall_s": time.time() - start, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def measure(workload, pipe, method, model: ModelConfig, prompt: str, seed: int, device: str, cache: Path,
            cfg: DictConfig, store: ResultStore, key: str) -> dict:
    from eval.workloads.attention import AttentionWorkload, run_attention_item
    from eval.workloads.video import DenseReferences, run_video_item

    if isinstance(workload, AttentionWorkload):
        calls = (workload.synthetic_calls(seed, device) if workload.source == "synthetic"
                 else workload.captured_calls(pipe, model, prompt, seed, device, cache / "attention"))
        return run_attention_item(workload, calls, method, device)
    refs = _REFS.setdefault(str(cache), DenseReferences(cache / "dense"))
    gif = store.folder / "frames" / f"{key}.gif" if workload.gif else None
    return run_video_item(workload, pipe, method, model, prompt, seed, device, refs, cfg.metrics, gif)


_REFS: dict = {}  # dense references (and their in-process timings) shared by the jobs of one process


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
