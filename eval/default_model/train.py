"""Train the embedded default model: flow matching on procedural clips, saved as a WanPipeline directory.

    python -m eval.default_model.train --stage stage1_base       # a stage of the shipped weights (H200; STAGES)
    python -m eval.default_model.train --preset tiny --max-steps 3 --device cpu --eval-clips 2   # a smoke run

Every step renders a fresh batch of clips (seeds ``TRAIN_SEED0 + step * batch + i``; evaluation seeds come
from disjoint ranges), encodes the prompts through the pipeline's own ``encode_prompt`` (so training pads
text exactly as generation does), and regresses the flow velocity ``noise - x0`` at ``x_t = (1 - s) x0 + s noise``
with ``s = shift(u)``, ``u`` uniform, shifted as the scheduler shifts its sigmas (so training sees noise levels as
often as sampling visits them; high noise decides layout and colour; ``--train-shift`` sets another shift), and
timestep ``1000 s``, as the Wan scheduler expects. Prompts are dropped to "" with
probability ``cond_dropout`` so classifier-free guidance works. The exponential moving average of the weights
is what gets saved.

The number of steps is fixed after a short warm-up from the measured rate and ``max_minutes`` and printed;
``--max-steps N --max-minutes 0`` re-runs the same schedule without a clock.

A run can stop and go on: ``--stop-after-minutes M`` ends this invocation after M minutes, and SIGTERM or
Ctrl-C end it at the next step; either way the state (weights, weight average, optimiser, random generators,
step) is saved to ``checkpoint.pt`` under ``--out`` (also every ``--checkpoint-minutes``), and ``--resume``
continues from it with the same schedule, appending to ``loss.csv``.

Several GPUs: ``torchrun --standalone --nproc-per-node 2 -m eval.default_model.train ...`` splits each
step's batch over the processes (``--batch-size`` stays the global batch); the noise is drawn for the whole
batch on every process and gradients are averaged, so it takes the same steps as one process (tested on the
CPU against a single-process run). Rank 0 logs, saves and evaluates.

``--init-from DIR`` starts from a saved default model's transformer (and its latent statistics) instead of
seeded random weights: a fine-tune (the shipped model is one: MODEL_CARD.md). The architecture fields
must match.

``--train-text`` trains the text encoder with the transformer (its weights start from the same seeded random
ones); ``--model "num_layers=8,ffn_dim=1024"`` changes DiTConfig fields of the preset.

``--stage NAME`` sets the flags of one of the three stages that made the shipped weights (``STAGES``; explicit
flags still override them): it trains for the recorded number of steps, starts from the model the previous
stage saved, and writes next to the stage's committed record in ``results/default_model/NAME/``.

Writes under ``--out`` (default ``results/default_model/run/``): ``model/`` (diffusers format), ``loss.csv``,
``loss.png``, ``train.json``, and after the model is saved, the evaluation of evaluate.py (``eval.json``,
``samples.png``) and of conditioning.py (``conditioning.json``). ``results/default_model/.gitignore`` keeps
all but the stages' records out of git.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eval.default_model.components import TINY, DiTConfig, build_pipeline, build_transformer, encode_prompts, \
    latent_stats, load_model_config, pixels_to_latents, save_model
from eval.default_model.procedural import render

PRESETS = {"default": DiTConfig(), "tiny": TINY}
TRAIN_SEED0 = 0
STATS_SEED0 = 50_000_000  # latent statistics clips
RECORDS = Path(__file__).resolve().parents[2] / "results" / "default_model"

# The stages of the shipped weights (MODEL_CARD.md) as the TrainConfig fields they set; the rest are defaults.
# The step counts are those the recorded runs' clocks chose; each stage writes next to its committed record and
# starts from the model the stage before it saved there.
STAGES = {
    "stage1_base": dict(out=str(RECORDS / "stage1_base"), max_steps=8835, compile=True),
    "stage2_shift20": dict(out=str(RECORDS / "stage2_shift20"), max_steps=3715, compile=True, lr=3e-4,
                           train_shift=20.0, init_from=str(RECORDS / "stage1_base" / "model")),
    "stage3_shift50": dict(out=str(RECORDS / "stage3_shift50"), max_steps=4264, compile=True, lr=3e-4,
                           train_shift=50.0, init_from=str(RECORDS / "stage2_shift20" / "model")),
}


@dataclass
class TrainConfig:
    out: str = str(RECORDS / "run")
    preset: str = "default"
    seed: int = 0
    batch_size: int = 128  # clips per step, over all processes
    lr: float = 1e-3
    warmup_steps: int = 100  # the step rate is measured during warm-up, when lr does not depend on max_steps
    max_steps: int = 0  # 0: set from the measured rate and max_minutes
    max_minutes: float = 18.0
    ema_decay: float = 0.999
    cond_dropout: float = 0.1
    train_shift: float = 0.0  # shift of the training noise levels; 0: the scheduler's flow_shift (module doc)
    train_text: bool = False  # train the text encoder with the transformer (else its seeded random weights stay)
    model: str = ""  # DiTConfig fields that differ from the preset, e.g. "num_layers=8,ffn_dim=1024"
    stats_clips: int = 256
    log_every: int = 10
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    eval_clips: int = 50
    stop_after_minutes: float = 0.0  # end this invocation after this long, saving checkpoint.pt; 0: no limit
    checkpoint_minutes: float = 5.0  # also save checkpoint.pt this often
    resume: bool = False  # continue from checkpoint.pt under out
    compile: bool = False  # torch.compile the transformer for training (GPU: ~1 min to compile, 2.5x the step rate)
    spec_workers: int = -1  # processes drawing the next steps' clip specs; -1: 2 on a GPU, 0 (inline) on the CPU
    init_from: str = ""  # a saved default model to start from (its transformer and latent statistics); "": random

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset={self.preset!r}; expected one of {sorted(PRESETS)}")
        if self.max_steps <= 0 and self.max_minutes <= 0:
            raise ValueError(f"max_steps={self.max_steps} and max_minutes={self.max_minutes}; expected one > 0")
        if not self.max_steps and self.warmup_steps <= 10:
            raise ValueError(f"warmup_steps={self.warmup_steps}; expected > 10 when the clock sets max_steps")
        if self.stop_after_minutes < 0 or self.checkpoint_minutes <= 0:
            raise ValueError(f"stop_after_minutes={self.stop_after_minutes}, checkpoint_minutes="
                             f"{self.checkpoint_minutes}; expected >= 0 and > 0")
        if self.spec_workers < -1:
            raise ValueError(f"spec_workers={self.spec_workers}; expected >= 0, or -1 for the default")
        if self.train_shift < 0:
            raise ValueError(f"train_shift={self.train_shift}; expected > 0, or 0 for the scheduler's flow_shift")
        dit_config(self)  # names a bad --model entry before anything runs
        if self.max_steps and self.max_steps < self.warmup_steps:
            self.warmup_steps = max(self.max_steps // 2, 1)


def dit_config(cfg: TrainConfig) -> DiTConfig:
    """The preset with ``cfg.model``'s "field=value,..." overrides and the training seed."""
    fields = {f.name: f.type for f in dataclasses.fields(DiTConfig)}
    overrides = {}
    for item in filter(None, (part.strip() for part in cfg.model.split(","))):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in fields or name == "seed" or not value:
            raise ValueError(f"model={cfg.model!r}: {item!r} is not field=value for a DiTConfig field "
                             f"(one of {sorted(set(fields) - {'seed'})})")
        kind = {"float": float, "str": str, "bool": _parse_bool}.get(
            getattr(fields[name], "__name__", fields[name]), int)
        try:
            overrides[name] = kind(value.strip())
        except ValueError:
            raise ValueError(f"model={cfg.model!r}: {name} needs a {kind.__name__}, got {value!r}") from None
    return dataclasses.replace(PRESETS[cfg.preset], **overrides, seed=cfg.seed)


def _parse_bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ValueError(value)


_parse_bool.__name__ = "bool"

# DiTConfig fields that a fine-tune (--init-from) may change: what the clips look like, not the network.
DATA_FIELDS = ("scene", "trail", "seed")


def init_weights(model_dir: str, mcfg: DiTConfig):
    """The transformer state and latent statistics of the saved default model ``model_dir``, after checking
    that its architecture is ``mcfg``'s."""
    from safetensors.torch import load_file

    saved = load_model_config(model_dir)
    diff = {f.name: (getattr(saved, f.name), getattr(mcfg, f.name)) for f in dataclasses.fields(DiTConfig)
            if f.name not in DATA_FIELDS and getattr(saved, f.name) != getattr(mcfg, f.name)}
    if diff:
        raise ValueError(f"--init-from {model_dir}: its model differs from this run's in (saved, this run): {diff}")
    files = sorted((Path(model_dir) / "transformer").glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"--init-from {model_dir}: no transformer/*.safetensors; expected a directory "
                                "written by train.py")
    state = {}
    for f in files:
        state.update(load_file(f))
    vae = json.loads((Path(model_dir) / "vae" / "config.json").read_text())
    return state, vae["latents_mean"], vae["latents_std"]


def lr_at(step: int, cfg: TrainConfig, max_steps: int | None) -> float:
    """Linear warm-up, then cosine to 10% over the remaining steps."""
    if step < cfg.warmup_steps or max_steps is None:
        return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class _SpecFeed:
    """The clip specs of step after step; with workers, drawn ahead in other processes (they are plain numpy
    and took as long as a training step on the H200)."""

    def __init__(self, cfg: TrainConfig, mcfg: DiTConfig, first_step: int, device: torch.device,
                 offset: int = 0, count: int | None = None):
        """``offset``, ``count``: this process's slice of every batch (default: all of it)."""
        workers = cfg.spec_workers if cfg.spec_workers >= 0 else (2 if device.type == "cuda" else 0)
        self.batch, self.offset, self.count = cfg.batch_size, offset, count or cfg.batch_size
        self.mcfg, self.step, self.ahead = mcfg, first_step, 2 * workers
        self.pool, self.pending = None, []
        if workers:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def _seed0(self, step: int) -> int:
        return TRAIN_SEED0 + step * self.batch + self.offset

    def next(self) -> list:
        if self.pool is None:
            specs = self.mcfg.specs(self._seed0(self.step), self.count)
        else:
            while len(self.pending) <= self.ahead:
                k = self.step + len(self.pending)
                self.pending.append(self.pool.submit(self.mcfg.specs, self._seed0(k), self.count))
            specs = self.pending.pop(0).result()
        self.step += 1
        return specs

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


CHECKPOINT = "checkpoint.pt"
# Fields that may differ between a run and its resumption: they say how this invocation runs, not what it trains.
_RUN_FIELDS = {"stop_after_minutes", "checkpoint_minutes", "resume", "eval_clips", "log_every", "device", "compile",
               "spec_workers"}


def _schedule_fields(cfg: TrainConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RUN_FIELDS}


class _StopRequest:
    """Turns SIGTERM and Ctrl-C into a flag the training loop checks after each step (main thread only)."""

    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class _Ranks:
    """This process's place in a multi-process run started by ``torchrun`` (WORLD_SIZE > 1), or a single one.

    Every rank renders its slice of the global batch; the noise of the whole batch is drawn on every rank from
    the same seed and sliced, and gradients are averaged, so N ranks take the steps one process would.
    Rank 0 alone logs, saves and evaluates; the ranks agree on stopping and saving at logging steps."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = device
        if self.world > 1:
            import torch.distributed as dist

            if device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, *flags: bool) -> list[bool]:
        """Per flag: whether any rank raised it."""
        if self.world == 1:
            return list(flags)
        import torch.distributed as dist

        t = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world
        return value

    def average_gradients(self, params) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = [p.grad for p in params if p.grad is not None]  # the same parameters on every rank
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= self.world
        for g, avg in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(avg)

    def close(self, wait: bool = True) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if wait:
                dist.barrier()
            dist.destroy_process_group()


def train(cfg: TrainConfig) -> Path | None:
    """Train; the saved model's folder, or None when the run stopped early (``checkpoint.pt`` holds its state)
    and on every rank but the first of a multi-process run."""
    ranks = _Ranks(torch.device(cfg.device))
    try:
        result = _train(cfg, ranks)
    except BaseException:
        ranks.close(wait=False)  # the other ranks fail on their next collective instead of waiting here
        raise
    ranks.close()
    return result


def _train(cfg: TrainConfig, ranks: _Ranks) -> Path | None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    mcfg = dit_config(cfg)
    device, world, say = ranks.device, ranks.world, (print if ranks.main else lambda *a, **k: None)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} does not split over {world} processes")
    b, lo = cfg.batch_size // world, ranks.rank * (cfg.batch_size // world)  # this rank's slice of the batch
    torch.manual_seed(cfg.seed)  # the same on every rank: noise is drawn for the whole batch, then sliced
    rng = np.random.default_rng(cfg.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    ckpt = _load_checkpoint(out, cfg, world) if cfg.resume else None

    init_state = None  # the transformer weights of --init-from (a resumed run has its own in the checkpoint)
    if ckpt is not None:
        mean, std = ckpt["latents_mean"], ckpt["latents_std"]
    elif cfg.init_from:  # also the saved model's latent space, which its weights were trained in
        init_state, mean, std = init_weights(cfg.init_from, mcfg)
    else:
        mean, std = ranks.broadcast(latent_stats(render(mcfg.specs(STATS_SEED0, cfg.stats_clips), device)))
    pipe = build_pipeline(mcfg, build_transformer(mcfg), mean, std).to(device)
    model = pipe.transformer.train().requires_grad_(True)
    if init_state is not None:
        model.load_state_dict(init_state)
    # What the optimiser and the weight average see: the transformer, and the text encoder if it trains.
    trained = torch.nn.ModuleDict(dict(transformer=model))
    if cfg.train_text:
        trained["text_encoder"] = pipe.text_encoder.train().requires_grad_(True)
    ema = copy.deepcopy(trained).eval().requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(trained.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    max_steps, smooth, step, done_s = cfg.max_steps or None, None, 0, 0.0
    if ckpt is not None:
        trained.load_state_dict(ckpt["trained"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
        max_steps, smooth, step, done_s = ckpt["max_steps"], ckpt["loss_smooth"], ckpt["step"], ckpt["elapsed_s"]
    say(f"transformer {n_params / 1e6:.2f}M params, {mcfg.tokens} tokens/clip, text encoder "
        f"{'trained' if cfg.train_text else 'frozen'}, device {device}"
        + (f" x {world} processes" if world > 1 else "")
        + (f", resumed at step {step} of {max_steps}" if ckpt else "")
        + (f", starting from {cfg.init_from}" if init_state is not None else ""), flush=True)

    def save_checkpoint():
        if not ranks.main:
            return
        state = dict(config=_schedule_fields(cfg), world_size=world, step=step, max_steps=max_steps,
                     loss_smooth=smooth, elapsed_s=done_s + time.perf_counter() - t0, latents_mean=mean,
                     latents_std=std, trained=trained.state_dict(), ema=ema.state_dict(), optimizer=opt.state_dict(),
                     numpy_rng=rng.bit_generator.state, torch_rng=torch.get_rng_state(),
                     cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None)
        torch.save(state, out / (CHECKPOINT + ".tmp"))
        (out / (CHECKPOINT + ".tmp")).replace(out / CHECKPOINT)  # a kill mid-write leaves the old one whole

    forward = torch.compile(model) if cfg.compile else model
    feed = _SpecFeed(cfg, mcfg, step, device, lo, b)
    t0 = time.perf_counter()
    last_save, stopped, start_step = t0, None, step
    log_file = open(out / "loss.csv", "a" if ckpt else "w", newline="") if ranks.main else open(os.devnull, "w")
    with log_file as f, _StopRequest() as stop, contextlib.closing(feed):
        log = csv.writer(f)
        if ckpt is None:
            log.writerow(["step", "loss", "loss_smooth", "lr", "elapsed_s", "clips_per_s"])
        while max_steps is None or step < max_steps:
            specs = feed.next()
            x0 = pixels_to_latents(render(specs, device), mean, std)  # (b, 12, T, H/2, W/2)
            keep = rng.random(cfg.batch_size)[lo:lo + b] >= cfg.cond_dropout
            prompts = [s.prompt if k else "" for s, k in zip(specs, keep)]
            with torch.set_grad_enabled(cfg.train_text):
                text = encode_prompts(pipe, prompts, mcfg.text_tokens)
            u = torch.rand(cfg.batch_size, device=device)[lo:lo + b]
            shift = cfg.train_shift or mcfg.flow_shift
            sigma = shift * u / (1 + (shift - 1) * u)
            noise = torch.randn((cfg.batch_size,) + tuple(x0.shape[1:]), device=device)[lo:lo + b]
            s = sigma.view(-1, 1, 1, 1, 1)
            xt = (1 - s) * x0 + s * noise
            with amp:
                pred = forward(xt, sigma * 1000, text, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), noise - x0)
            lr = lr_at(step, cfg, max_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            ranks.average_gradients(trained.parameters())
            torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
            opt.step()
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(list(ema.parameters()), list(trained.parameters()), 1 - decay)
            step += 1
            now = time.perf_counter()
            logging_step = step % cfg.log_every == 0 or step == max_steps
            if logging_step:
                value = ranks.mean(loss).item()
                smooth = value if smooth is None else 0.9 * smooth + 0.1 * value
                elapsed = done_s + now - t0
                log.writerow([step, f"{value:.5f}", f"{smooth:.5f}", f"{lr:.2e}", f"{elapsed:.1f}",
                              f"{step * cfg.batch_size / elapsed:.1f}"])
                f.flush()
                if step % (cfg.log_every * 20) == 0 or step == max_steps:
                    say(f"step {step} loss {smooth:.4f} lr {lr:.2e} {elapsed:.0f}s", flush=True)
            if step == start_step + 10:
                t10 = now  # the rate excludes start-up (allocator, kernel selection)
            if max_steps is None and step == cfg.warmup_steps:
                rate = (step - 10) / (now - t10)
                max_steps = ranks.broadcast(step + max(1, int(rate * (cfg.max_minutes * 60 - (now - t0)))))
                say(f"{rate:.1f} steps/s after warm-up: max_steps={max_steps}", flush=True)
            if step == max_steps or (world > 1 and not logging_step):
                continue  # no checkpoint needed at the end; several processes agree at logging steps only
            signal_, time_up, save_due = ranks.any(
                bool(stop.signal), bool(cfg.stop_after_minutes and now - t0 >= cfg.stop_after_minutes * 60),
                now - last_save >= cfg.checkpoint_minutes * 60)
            if max_steps is None:  # no checkpoint before the schedule is fixed
                if signal_:
                    say(f"stopped at step {step} ({stop.signal or 'signal'}) before the step count was fixed; "
                        "nothing saved", flush=True)
                    return None
                continue
            if signal_ or time_up:
                stopped = (stop.signal or "signal") if signal_ else f"--stop-after-minutes {cfg.stop_after_minutes:g}"
                break
            if save_due:
                save_checkpoint()
                last_save = time.perf_counter()
    if stopped:
        save_checkpoint()
        say(f"stopped at step {step} of {max_steps} ({stopped}); state saved to {out / CHECKPOINT}: "
            "continue with the same arguments and --resume", flush=True)
        return None
    if not ranks.main:
        return None

    pipe.transformer = ema["transformer"].float()
    if cfg.train_text:
        pipe.text_encoder = ema["text_encoder"].float()
    model_dir = out / "model"
    save_model(pipe, mcfg, model_dir)
    meta = dict(train=dataclasses.asdict(cfg), model=dataclasses.asdict(mcfg), steps=step, params=n_params,
                processes=world, seconds=round(done_s + time.perf_counter() - t0, 1), final_loss_smooth=smooth)
    (out / "train.json").write_text(json.dumps(meta, indent=1))
    plot_loss(out / "loss.csv", out / "loss.png")
    (out / CHECKPOINT).unlink(missing_ok=True)
    print(f"saved {model_dir} after {step} steps", flush=True)
    return model_dir


def _load_checkpoint(out: Path, cfg: TrainConfig, world: int) -> dict:
    path = out / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"--resume: {path} does not exist; expected the checkpoint of a stopped run "
                                "under --out (a finished run removes it)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    saved, now = ckpt["config"], _schedule_fields(cfg)
    diff = {k: (saved.get(k), now.get(k)) for k in set(saved) | set(now) if saved.get(k) != now.get(k)}
    if ckpt.get("world_size", 1) != world:
        diff["processes"] = (ckpt.get("world_size", 1), world)
    if diff:
        raise ValueError(f"--resume: {path} was written with other settings (saved, given): {diff}; "
                         "resume with the arguments of the stopped run")
    return ckpt


def plot_loss(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(csv_path)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(df["step"], df["loss"], alpha=0.3, label="loss")
    ax.plot(df["step"], df["loss_smooth"], label="smoothed")
    ax.set(xlabel="step", ylabel="flow-matching MSE", yscale="log", title="default model training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


HELP = {
    "out": "folder for model/, loss.csv, loss.png, train.json and the evaluation",
    "preset": f"model size preset: {', '.join(PRESETS)}",
    "batch_size": "clips per step, over all processes of a torchrun",
    "max_steps": "steps to train; 0: set from the step rate measured in warm-up and --max-minutes",
    "max_minutes": "training time budget when --max-steps is 0",
    "train_shift": "shift of the training noise levels; 0: the scheduler's flow_shift",
    "train_text": "train the text encoder with the transformer (default: keep its seeded random weights)",
    "model": 'DiTConfig fields that differ from the preset, e.g. "num_layers=8,ffn_dim=1024,scene=simple"',
    "eval_clips": "clips per guidance and seed set scored after training (0: skip the evaluation)",
    "stop_after_minutes": "end this invocation after this many minutes, saving checkpoint.pt (0: no limit)",
    "checkpoint_minutes": "save checkpoint.pt this often while training",
    "compile": "torch.compile the transformer for training (worth it on a GPU)",
    "spec_workers": "processes drawing clip specs ahead of the training step; -1: 2 on a GPU, none on the CPU",
    "init_from": "start from this saved default model's transformer (fine-tune); architecture fields must match",
    "resume": "continue the stopped run under --out from its checkpoint.pt, with the same arguments",
}


def parse_args(argv=None) -> TrainConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage", choices=list(STAGES), help="the flags of a stage of the shipped weights (STAGES); "
                   "explicit flags override them")
    for f in dataclasses.fields(TrainConfig):
        default, flag = f.default, "--" + f.name.replace("_", "-")
        kwargs = dict(default=default, help=HELP.get(f.name))
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            p.add_argument(flag, type=type(default), **kwargs)
    stage = p.parse_known_args(argv)[0].stage
    if stage:
        p.set_defaults(**STAGES[stage])
    args = vars(p.parse_args(argv))
    del args["stage"]
    return TrainConfig(**args)


if __name__ == "__main__":
    cfg = parse_args()
    model_dir = train(cfg)
    if model_dir is not None and cfg.eval_clips:
        from eval.default_model.evaluate import evaluate_training_run

        evaluate_training_run(model_dir, Path(cfg.out), cfg.eval_clips, cfg.device)
        from eval.default_model.conditioning import main as conditioning

        conditioning(["--model", str(model_dir), "--device", cfg.device, "--clips", "16",
                      "--out", str(Path(cfg.out) / "conditioning.json")])
