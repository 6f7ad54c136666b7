"""Train the embedded default model: flow matching on procedural clips, saved as a WanPipeline directory.

    python -m eval.default_model.train --out /tmp/run --max-minutes 4.5          # the shipped run (H200)
    python -m eval.default_model.train --out /tmp/smoke --preset tiny --max-steps 3 --device cpu --eval-clips 2

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

``--train-text`` trains the text encoder with the transformer (its weights start from the same seeded random
ones); ``--model "num_layers=8,ffn_dim=1024"`` changes ModelConfig fields of the preset.

Writes under ``--out``: ``model/`` (diffusers format), ``loss.csv``, ``loss.png``, and after the model is
saved, the evaluation of evaluate.py (``eval.json``, ``samples.png``) and of conditioning.py
(``conditioning.json``).
"""
from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eval.default_model.components import TINY, ModelConfig, build_pipeline, build_transformer, latent_stats, \
    pixels_to_latents, save_model
from eval.default_model.procedural import render

PRESETS = {"default": ModelConfig(), "tiny": TINY}
TRAIN_SEED0 = 0
STATS_SEED0 = 50_000_000  # latent statistics clips


@dataclass
class TrainConfig:
    out: str = "/tmp/default_model_run"
    preset: str = "default"
    seed: int = 0
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100  # the step rate is measured during warm-up, when lr does not depend on max_steps
    max_steps: int = 0  # 0: set from the measured rate and max_minutes
    max_minutes: float = 4.5
    ema_decay: float = 0.995
    cond_dropout: float = 0.1
    train_shift: float = 0.0  # shift of the training noise levels; 0: the scheduler's flow_shift (module doc)
    train_text: bool = False  # train the text encoder with the transformer (else its seeded random weights stay)
    model: str = ""  # ModelConfig fields that differ from the preset, e.g. "num_layers=8,ffn_dim=1024"
    stats_clips: int = 256
    log_every: int = 10
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    eval_clips: int = 50

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset={self.preset!r}; expected one of {sorted(PRESETS)}")
        if self.max_steps <= 0 and self.max_minutes <= 0:
            raise ValueError(f"max_steps={self.max_steps} and max_minutes={self.max_minutes}; expected one > 0")
        if not self.max_steps and self.warmup_steps <= 10:
            raise ValueError(f"warmup_steps={self.warmup_steps}; expected > 10 when the clock sets max_steps")
        if self.train_shift < 0:
            raise ValueError(f"train_shift={self.train_shift}; expected > 0, or 0 for the scheduler's flow_shift")
        model_config(self)  # names a bad --model entry before anything runs
        if self.max_steps and self.max_steps < self.warmup_steps:
            self.warmup_steps = max(self.max_steps // 2, 1)


def model_config(cfg: TrainConfig) -> ModelConfig:
    """The preset with ``cfg.model``'s "field=value,..." overrides and the training seed."""
    fields = {f.name: f.type for f in dataclasses.fields(ModelConfig)}
    overrides = {}
    for item in filter(None, (part.strip() for part in cfg.model.split(","))):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in fields or name == "seed" or not value:
            raise ValueError(f"model={cfg.model!r}: {item!r} is not field=value for a ModelConfig field "
                             f"(one of {sorted(set(fields) - {'seed'})})")
        kind = {"float": float, "str": str}.get(getattr(fields[name], "__name__", fields[name]), int)
        try:
            overrides[name] = kind(value)
        except ValueError:
            raise ValueError(f"model={cfg.model!r}: {name} needs a {kind.__name__}, got {value!r}") from None
    return dataclasses.replace(PRESETS[cfg.preset], **overrides, seed=cfg.seed)


def lr_at(step: int, cfg: TrainConfig, max_steps: int | None) -> float:
    """Linear warm-up, then cosine to 10% over the remaining steps."""
    if step < cfg.warmup_steps or max_steps is None:
        return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def clip_batch(seed0: int, n: int, mcfg: ModelConfig) -> list:
    return [mcfg.spec(seed0 + i) for i in range(n)]


def train(cfg: TrainConfig) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    mcfg = model_config(cfg)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    torch.backends.cuda.matmul.allow_tf32 = True

    mean, std = latent_stats(render(clip_batch(STATS_SEED0, cfg.stats_clips, mcfg), device))
    pipe = build_pipeline(mcfg, build_transformer(mcfg), mean, std).to(device)
    model = pipe.transformer.train().requires_grad_(True)
    # What the optimiser and the weight average see: the transformer, and the text encoder if it trains.
    trained = torch.nn.ModuleDict(dict(transformer=model))
    if cfg.train_text:
        trained["text_encoder"] = pipe.text_encoder.train().requires_grad_(True)
    ema = copy.deepcopy(trained).eval().requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"transformer {n_params / 1e6:.2f}M params, {mcfg.tokens} tokens/clip, text encoder "
          f"{'trained' if cfg.train_text else 'frozen'}, device {device}", flush=True)
    opt = torch.optim.AdamW(trained.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    max_steps = cfg.max_steps or None
    rows, smooth, t0, step = [], None, time.perf_counter(), 0
    with open(out / "loss.csv", "w", newline="") as f:
        log = csv.writer(f)
        log.writerow(["step", "loss", "loss_smooth", "lr", "elapsed_s", "clips_per_s"])
        while max_steps is None or step < max_steps:
            specs = clip_batch(TRAIN_SEED0 + step * cfg.batch_size, cfg.batch_size, mcfg)
            x0 = pixels_to_latents(render(specs, device), mean, std)  # (B, 12, T, H/2, W/2)
            prompts = [s.prompt if rng.random() >= cfg.cond_dropout else "" for s in specs]
            with torch.set_grad_enabled(cfg.train_text):
                text = pipe.encode_prompt(prompts, do_classifier_free_guidance=False,
                                          max_sequence_length=mcfg.text_tokens, device=device)[0]
            u = torch.rand(cfg.batch_size, device=device)
            shift = cfg.train_shift or mcfg.flow_shift
            sigma = shift * u / (1 + (shift - 1) * u)
            noise = torch.randn_like(x0)
            s = sigma.view(-1, 1, 1, 1, 1)
            xt = (1 - s) * x0 + s * noise
            with amp:
                pred = model(xt, sigma * 1000, text, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), noise - x0)
            lr = lr_at(step, cfg, max_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
            opt.step()
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(list(ema.parameters()), list(trained.parameters()), 1 - decay)
            step += 1
            if step % cfg.log_every == 0 or step == max_steps:
                value = loss.item()
                smooth = value if smooth is None else 0.9 * smooth + 0.1 * value
                elapsed = time.perf_counter() - t0
                log.writerow([step, f"{value:.5f}", f"{smooth:.5f}", f"{lr:.2e}", f"{elapsed:.1f}",
                              f"{step * cfg.batch_size / elapsed:.1f}"])
                f.flush()
                rows.append((step, value, smooth))
                if step % (cfg.log_every * 20) == 0 or step == max_steps:
                    print(f"step {step} loss {smooth:.4f} lr {lr:.2e} {elapsed:.0f}s", flush=True)
            if step == 10:
                t10 = time.perf_counter()  # the rate excludes start-up (allocator, kernel selection)
            if max_steps is None and step == cfg.warmup_steps:
                now = time.perf_counter()
                rate = (step - 10) / (now - t10)
                max_steps = step + max(1, int(rate * (cfg.max_minutes * 60 - (now - t0))))
                print(f"{rate:.1f} steps/s after warm-up: max_steps={max_steps}", flush=True)

    pipe.transformer = ema["transformer"].float()
    if cfg.train_text:
        pipe.text_encoder = ema["text_encoder"].float()
    model_dir = out / "model"
    save_model(pipe, mcfg, model_dir)
    meta = dict(train=dataclasses.asdict(cfg), model=dataclasses.asdict(mcfg), steps=step, params=n_params,
                seconds=round(time.perf_counter() - t0, 1), final_loss_smooth=smooth)
    (out / "train.json").write_text(json.dumps(meta, indent=1))
    plot_loss(out / "loss.csv", out / "loss.png")
    print(f"saved {model_dir} after {step} steps", flush=True)
    return model_dir


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
    "out": "folder for model/, loss.csv, loss.png and the evaluation",
    "preset": f"model size preset: {', '.join(PRESETS)}",
    "max_steps": "steps to train; 0: set from the step rate measured in warm-up and --max-minutes",
    "max_minutes": "training time budget when --max-steps is 0",
    "train_shift": "shift of the training noise levels; 0: the scheduler's flow_shift",
    "train_text": "train the text encoder with the transformer (default: keep its seeded random weights)",
    "model": 'ModelConfig fields that differ from the preset, e.g. "num_layers=8,ffn_dim=1024,scene=simple"',
    "eval_clips": "clips per guidance and seed set scored after training (0: skip the evaluation)",
}


def parse_args(argv=None) -> TrainConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(TrainConfig):
        default, flag = f.default, "--" + f.name.replace("_", "-")
        kwargs = dict(default=default, help=HELP.get(f.name))
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            p.add_argument(flag, type=type(default), **kwargs)
    return TrainConfig(**vars(p.parse_args(argv)))


if __name__ == "__main__":
    cfg = parse_args()
    model_dir = train(cfg)
    if cfg.eval_clips:
        from eval.default_model.evaluate import evaluate_training_run

        evaluate_training_run(model_dir, Path(cfg.out), cfg.eval_clips, cfg.device)
        from eval.default_model.conditioning import main as conditioning

        conditioning(["--model", str(model_dir), "--device", cfg.device, "--clips", "16",
                      "--out", str(Path(cfg.out) / "conditioning.json")])
