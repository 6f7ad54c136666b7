"""Does the default model follow its prompts, and how fast does it generate on this machine?

    python -m eval.default_model.evaluate --clips 50                             # the shipped model's prompt following
    python -m eval.default_model.evaluate --device cuda --steps 32 --guidance 5  # other sampler settings
    python -m eval.default_model.evaluate --time                                 # seconds for one default clip

Prompt following: generate clips for procedural prompts from seeds the training never saw, score each with the
pixel-statistics detector (colour and motion direction of the subject) and compare with chance. After training
(``evaluate_training_run``), the guidance scale is chosen on one seed range (SELECT_SEED0) and reported on another
(REPORT_SEED0), written into the run's folder as ``eval.json`` with a ``samples.png``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from eval.default_model.components import DEFAULT_GUIDANCE, DEFAULT_STEPS, SHIPPED_MODEL, generation_kwargs, \
    load_model_config
from eval.default_model.detector import score_clip, summarise
from eval.default_model.procedural import render

SELECT_SEED0 = 20_000_000
REPORT_SEED0 = 30_000_000
GUIDANCES = (1.0, 3.0, 5.0)


def load_pipeline(model_dir: str | Path, device: str = "cpu"):
    """The pipeline, loaded as every Wan T2V model is, with its DiTConfig as ``pipe.dit_config``."""
    from svg2.diffusers import load_pipeline as load

    pipe = load("wan_t2v", model_dir, device=device)
    pipe.dit_config = load_model_config(model_dir)
    return pipe


@torch.no_grad()
def generate(pipe, seeds: list[int], guidance: float = DEFAULT_GUIDANCE, steps: int = DEFAULT_STEPS,
             batch: int = 25) -> tuple[torch.Tensor, list[str]]:
    """Clips (N, T, H, W, 3) in [0, 1] for the prompts of ``seeds``; the noise is seeded by the same seed."""
    cfg = pipe.dit_config
    prompts = [cfg.spec(s).prompt for s in seeds]
    device = pipe.transformer.device
    out = []
    for i in range(0, len(seeds), batch):
        gens = [torch.Generator(device).manual_seed(s) for s in seeds[i:i + batch]]
        video = pipe(prompt=prompts[i:i + batch], generator=gens, output_type="pt",
                     **generation_kwargs(cfg, steps, guidance)).frames  # (B, T, 3, H, W) in [0, 1]
        out.append(video.permute(0, 1, 3, 4, 2).float().cpu())
    return torch.cat(out), prompts


def prompt_following(pipe, seeds: list[int], guidance: float, steps: int = DEFAULT_STEPS) -> dict:
    frames, prompts = generate(pipe, seeds, guidance, steps)
    summary = summarise([score_clip(f, p) for f, p in zip(frames, prompts)])
    return dict(summary, guidance=guidance, steps=steps, seeds=f"{seeds[0]}..{seeds[-1]}")


def save_samples(frames: torch.Tensor, seeds: list[int], path: Path, cfg, every: int = 2) -> None:
    """Rows: generated clip, then the procedural clip its prompt was drawn from; columns: frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = [cfg.spec(s) for s in seeds]
    truth = render(specs)
    cols = list(range(0, frames.shape[1], every))
    fig, axes = plt.subplots(2 * len(seeds), len(cols), figsize=(1.2 * len(cols), 2.6 * len(seeds)))
    for r, spec in enumerate(specs):
        for c, t in enumerate(cols):
            for k, clip in enumerate((frames[r], truth[r])):
                ax = axes[2 * r + k, c]
                ax.imshow(clip[t].clamp(0, 1).numpy())
                ax.set_xticks([]), ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel("generated" if k == 0 else "procedural", fontsize=7)
        axes[2 * r, 0].set_title(spec.prompt, fontsize=7, loc="left", x=0)
    # Fixed margins: the prompts span their rows, and tight_layout (matplotlib >= 3.10) then squeezes the
    # first column down to a dot trying to fit them beside it.
    fig.subplots_adjust(left=0.04, right=0.995, bottom=0.005, top=0.985, wspace=0.04, hspace=0.3)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def evaluate_training_run(model_dir: Path, out: Path, clips: int, device: str) -> dict:
    pipe = load_pipeline(model_dir, device)
    select = [prompt_following(pipe, list(range(SELECT_SEED0, SELECT_SEED0 + clips)), g) for g in GUIDANCES]
    best = max(select, key=lambda r: (r["both_acc"], r["guidance"] == DEFAULT_GUIDANCE))["guidance"]
    report_seeds = list(range(REPORT_SEED0, REPORT_SEED0 + clips))
    report = [prompt_following(pipe, report_seeds, g) for g in GUIDANCES]
    result = dict(selection=select, chosen_guidance=best, report=report)
    (out / "eval.json").write_text(json.dumps(result, indent=1))
    frames, _ = generate(pipe, report_seeds[:6], best)
    save_samples(frames, report_seeds[:6], out / "samples.png", pipe.dit_config)
    for r in report:
        print(f"guidance {r['guidance']}: colour {r['colour_acc']:.2f} direction {r['direction_acc']:.2f} "
              f"both {r['both_acc']:.2f} (chance {r['both_chance']:.3f}), subject speed {r['subject_speed']:.2f} "
              f"pixels/frame, steadiness {r['subject_steadiness']:.2f}", flush=True)
    return result


def time_default_clip(pipe, repeats: int = 2) -> list[float]:
    """Seconds to generate one default clip (dense attention, default steps and guidance), after a warm-up."""
    generate(pipe, [REPORT_SEED0], steps=2)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(pipe, [REPORT_SEED0])
        times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(SHIPPED_MODEL))
    p.add_argument("--device", default="cpu")
    p.add_argument("--clips", type=int, default=50)
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="sampler steps of each clip")
    p.add_argument("--time", action="store_true", help="time one default clip instead of scoring")
    args = p.parse_args(argv)
    pipe = load_pipeline(args.model, args.device)
    if args.time:
        times = time_default_clip(pipe)
        print(json.dumps(dict(seconds=[round(t, 2) for t in times], threads=torch.get_num_threads(),
                              tokens=pipe.dit_config.tokens, steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE)))
        return
    seeds = list(range(REPORT_SEED0, REPORT_SEED0 + args.clips))
    print(json.dumps(prompt_following(pipe, seeds, args.guidance, args.steps)))


if __name__ == "__main__":
    main()
