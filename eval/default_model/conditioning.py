"""Does the model read a prompt attribute? Swap it and see whether the one-step prediction follows.

    python -m eval.default_model.conditioning --clips 16            # the shipped model; --model DIR for another

For procedural clips of held-out seeds, noise each clip to level σ and predict x0 (one transformer forward)
twice: with its own prompt and with the subject's colour or direction word swapped (left<->right,
up<->down; colour: the next palette colour). The detector reads the subject's colour and direction from
both predictions. ``follows_prompt``: the prediction with the true prompt shows the true attribute (at low
σ the noisy input alone tells it); ``follows_swap``: the prediction with the swapped prompt shows the
swapped attribute. A model that reads the word follows the swap at high σ, where the input has little
signal left; one that ignores it keeps the input's attribute (follows_swap ~ 0). No sampling, so it takes
seconds on a CPU and isolates the conditioning from the sampler.

``--denoise`` instead reports how well the model denoises at all: for each σ, the RMS error of its one-step
x0 prediction against the RMS of the noise it was given (``ratio`` < 1: it removes noise; a model whose ratio
is far from 0 at low σ leaves speckle in its samples whatever its prompt does).

``--shuffle`` reports how much the model uses token positions: the relative change of its output when the
tokens of the noisy input are shuffled (the output un-shuffled before comparing). 0 means a model that treats
every token alike wherever it sits (a bag of tokens: it can get colours right but not shapes or motion);
a model that builds shapes and motion from neighbouring tokens changes a lot.

``--restart`` asks where sampling loses what the prompt asks for: each held-out clip is noised to the
scheduler's noise level nearest below σ_start and the sampler (the pipeline's scheduler, steps and guidance)
runs from there to the end; the detector scores colour, direction and subject speed of the result. σ_start = 1
is a normal generation from pure noise; as σ_start falls, more of the clip's layout and motion is given. A
model whose samples keep the clip's motion from σ 0.9 but not from 0.99 decides motion at the highest noise
levels; one that loses it even from low σ cannot carry motion through its own denoising steps.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from eval.default_model.components import DEFAULT_GUIDANCE, DEFAULT_STEPS, SHIPPED_MODEL, encode_prompts, \
    pixels_to_latents
from eval.default_model.detector import detect, detect_motion, parse_prompt
from eval.default_model.evaluate import REPORT_SEED0, load_pipeline
from eval.default_model.procedural import COLOURS, render

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
SIGMAS = (0.5, 0.8, 0.9, 0.95, 0.99)
DENOISE_SIGMAS = (0.01, 0.03, 0.1, 0.3, 0.6, 0.9)
RESTART_SIGMAS = (0.6, 0.8, 0.9, 0.95, 1.0)


def swap_word(prompt: str, attribute: str) -> str:
    """The prompt with its subject's colour (first word after 'a') or motion direction (after 'moves') swapped."""
    colour, direction = parse_prompt(prompt)
    words = prompt.split()
    if attribute == "colour":
        names = list(COLOURS)
        words[words.index(colour)] = names[(names.index(colour) + 1) % len(names)]
    elif attribute == "direction":
        at = words.index("moves") + 1
        words[at] = OPPOSITE[words[at]]
    else:
        raise ValueError(f"attribute={attribute!r}; expected 'colour' or 'direction'")
    return " ".join(words)


def _held_out(pipe, clips: int, seed0: int) -> tuple[torch.Tensor, list[str]]:
    """Normalised latents (on the model's device) and prompts of the procedural clips of seeds seed0, seed0 + 1, ..."""
    specs = pipe.dit_config.specs(seed0, clips)
    x0 = pixels_to_latents(render(specs, pipe.transformer.device), pipe.vae.config.latents_mean,
                           pipe.vae.config.latents_std)
    return x0, [s.prompt for s in specs]


def _encode(pipe, texts: list[str]) -> torch.Tensor:
    return encode_prompts(pipe, texts, pipe.dit_config.text_tokens)


def _predict_x0(pipe, xt: torch.Tensor, sigma: float, text: torch.Tensor) -> torch.Tensor:
    """The one-step x0 prediction from ``xt`` at noise level ``sigma`` (flow velocity: noise - x0)."""
    t = torch.full((xt.shape[0],), sigma * 1000, device=xt.device)
    return xt - sigma * pipe.transformer(xt, t, text, return_dict=False)[0]


def _frames(pipe, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> clips (B, T, H, W, 3) in [0, 1] on the CPU, decoded as the pipeline decodes."""
    device = latents.device
    lat_mean = torch.tensor(pipe.vae.config.latents_mean, device=device).view(1, -1, 1, 1, 1)
    lat_std = torch.tensor(pipe.vae.config.latents_std, device=device).view(1, -1, 1, 1, 1)
    video = pipe.vae.decode(latents * lat_std + lat_mean, return_dict=False)[0]
    return pipe.video_processor.postprocess_video(video, output_type="pt").permute(0, 1, 3, 4, 2).float().cpu()


@torch.no_grad()
def conditioning_check(pipe, clips: int = 16, sigmas=SIGMAS, seed0: int = REPORT_SEED0, seed: int = 0) -> list[dict]:
    device = pipe.transformer.device
    x0, prompts = _held_out(pipe, clips, seed0)
    gen = torch.Generator(device).manual_seed(seed)

    def detected(latents):
        return [detect(f) for f in _frames(pipe, latents)]  # (colour, direction) per clip

    rows = []
    for sigma in sigmas:
        noise = torch.randn(x0.shape, generator=gen, device=device)
        xt = (1 - sigma) * x0 + sigma * noise
        base = detected(_predict_x0(pipe, xt, sigma, _encode(pipe, prompts)))
        for k, attribute in enumerate(("colour", "direction")):
            swapped = [swap_word(p, attribute) for p in prompts]
            pred = detected(_predict_x0(pipe, xt, sigma, _encode(pipe, swapped)))
            rows.append(dict(sigma=sigma, attribute=attribute, clips=clips,
                             follows_prompt=sum(b[k] == parse_prompt(p)[k] for b, p in zip(base, prompts)) / clips,
                             follows_swap=sum(d[k] == parse_prompt(p)[k] for d, p in zip(pred, swapped)) / clips))
    return rows


@torch.no_grad()
def denoising_error(pipe, clips: int = 8, sigmas=DENOISE_SIGMAS, seed0: int = REPORT_SEED0,
                    seed: int = 0) -> list[dict]:
    """Per σ: RMS of the one-step x0 error (true prompts) and of the input's own error, in normalised latents."""
    device = pipe.transformer.device
    x0, prompts = _held_out(pipe, clips, seed0)
    text = _encode(pipe, prompts)
    gen = torch.Generator(device).manual_seed(seed)
    rows = []
    for sigma in sigmas:
        noise = torch.randn(x0.shape, generator=gen, device=device)
        xt = (1 - sigma) * x0 + sigma * noise
        pred = _predict_x0(pipe, xt, sigma, text)
        x0_rmse = (pred - x0).pow(2).mean().sqrt().item()
        input_rmse = (xt - x0).pow(2).mean().sqrt().item()
        rows.append(dict(sigma=sigma, clips=clips, x0_rmse=x0_rmse, input_rmse=input_rmse, ratio=x0_rmse / input_rmse))
    return rows


def _tokens(z: torch.Tensor, patch) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, tokens, C * pt * ph * pw): the transformer's patches, in its token order."""
    b, c, t, h, w = z.shape
    pt, ph, pw = patch
    z = z.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return z.reshape(b, (t // pt) * (h // ph) * (w // pw), -1)


def _untokens(z: torch.Tensor, shape, patch) -> torch.Tensor:
    b, c, t, h, w = shape
    pt, ph, pw = patch
    z = z.reshape(b, t // pt, h // ph, w // pw, c, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return z.reshape(shape)


@torch.no_grad()
def position_sensitivity(pipe, clips: int = 4, sigmas=(0.5, 0.9, 0.99), seed0: int = REPORT_SEED0,
                         seed: int = 0) -> list[dict]:
    """Per σ: ||f(shuffled x_t) un-shuffled - f(x_t)|| / ||f(x_t)|| for the model output f, one random
    permutation of the tokens per σ (true prompts)."""
    tr = pipe.transformer
    device = tr.device
    patch = tuple(tr.config.patch_size)
    x0, prompts = _held_out(pipe, clips, seed0)
    text = _encode(pipe, prompts)
    gen = torch.Generator(device).manual_seed(seed)
    rows = []
    for sigma in sigmas:
        xt = (1 - sigma) * x0 + sigma * torch.randn(x0.shape, generator=gen, device=device)
        t = torch.full((clips,), sigma * 1000, device=device)
        out = tr(xt, t, text, return_dict=False)[0]
        tokens = _tokens(xt, patch)
        perm = torch.randperm(tokens.shape[1], generator=gen, device=device)
        shuffled = tr(_untokens(tokens[:, perm], xt.shape, patch), t, text, return_dict=False)[0]
        back = _untokens(_tokens(shuffled, patch)[:, torch.argsort(perm)], out.shape, patch)
        rows.append(dict(sigma=sigma, clips=clips, relative_change=((back - out).norm() / out.norm()).item()))
    return rows


def _start_index(sigmas: list[float], sigma_start: float) -> int:
    """The first of the scheduler's levels at or below ``sigma_start`` (len(sigmas): below them all)."""
    return next((i for i, s in enumerate(sigmas) if s <= sigma_start + 1e-6), len(sigmas))


def _scheduler(pipe, steps: int, device=None):
    """A fresh copy of the pipeline's scheduler, set to ``steps`` steps (sampling changes its state)."""
    from diffusers import UniPCMultistepScheduler

    sched = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps, device=device)
    return sched


def start_level(pipe, sigma_start: float, steps: int = DEFAULT_STEPS) -> tuple[int, float]:
    """(sampler steps skipped, noise level sampling starts from) for ``sigma_start``."""
    sigmas = _scheduler(pipe, steps).sigmas.tolist()
    i = _start_index(sigmas[:-1], sigma_start)
    return i, sigmas[i]


@torch.no_grad()
def sample_from(pipe, x0: torch.Tensor, prompts: list[str], sigma_start: float, noise: torch.Tensor,
                steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE) -> torch.Tensor:
    """Normalised latents sampled from ``x0`` noised to the first scheduler level <= ``sigma_start`` (pure
    ``noise`` when that is the first level: what the pipeline does), with classifier-free guidance as in
    ``WanPipeline``."""
    tr = pipe.transformer
    sched = _scheduler(pipe, steps, x0.device)
    sigmas = sched.sigmas[:-1].tolist()
    start = _start_index(sigmas, sigma_start)
    if start == len(sigmas):
        return x0.clone()  # below the last level: nothing left to sample
    sched.set_begin_index(start)
    x = noise.clone() if start == 0 else (1 - sigmas[start]) * x0 + sigmas[start] * noise
    cond, uncond = _encode(pipe, prompts), _encode(pipe, [""] * len(prompts))
    for t in sched.timesteps[start:]:
        ts = t.expand(x.shape[0])
        v = tr(x, ts, cond, return_dict=False)[0]
        if guidance > 1:
            v_uncond = tr(x, ts, uncond, return_dict=False)[0]
            v = v_uncond + guidance * (v - v_uncond)
        x = sched.step(v, t, x, return_dict=False)[0]
    return x


@torch.no_grad()
def restart_check(pipe, clips: int = 16, starts=RESTART_SIGMAS, steps: int = DEFAULT_STEPS,
                  guidance: float = DEFAULT_GUIDANCE, seed0: int = REPORT_SEED0, seed: int = 0) -> list[dict]:
    """Per σ_start: how often the sample from the held-out clip noised to σ_start shows the prompt's colour
    and direction, and how fast its subject moves (the clips themselves: ``data_speed``)."""
    device = pipe.transformer.device
    x0, prompts = _held_out(pipe, clips, seed0)
    want = [parse_prompt(p) for p in prompts]
    data = [detect_motion(f) for f in _frames(pipe, x0)]
    noise = torch.randn(x0.shape, generator=torch.Generator(device).manual_seed(seed), device=device)  # every start
    rows = []
    for sigma in starts:
        got = [detect_motion(f) for f in _frames(pipe, sample_from(pipe, x0, prompts, sigma, noise, steps, guidance))]
        skipped, level = start_level(pipe, sigma, steps)
        rows.append(dict(sigma_start=sigma, start_level=level, steps_skipped=skipped, clips=clips, steps=steps,
                         guidance=guidance,
                         colour_acc=sum(g.colour == w[0] for g, w in zip(got, want)) / clips,
                         direction_acc=sum(g.direction == w[1] for g, w in zip(got, want)) / clips,
                         subject_speed=sum(g.speed for g in got) / clips,
                         subject_steadiness=sum(g.steadiness for g in got) / clips,
                         data_speed=sum(d.speed for d in data) / clips,
                         data_steadiness=sum(d.steadiness for d in data) / clips))
    return rows


# One printed line per row of each check.
LINES = {
    "restart": "from sigma {sigma_start:.2f} (level {start_level:.3f}, {steps_skipped} steps skipped): colour "
               "{colour_acc:.2f} direction {direction_acc:.2f} subject speed {subject_speed:.2f} px/frame, "
               "steadiness {subject_steadiness:.2f} (the clips: {data_speed:.2f}, {data_steadiness:.2f}; "
               "{clips} clips)",
    "shuffle": "sigma {sigma:.2f}: output changes by {relative_change:.3f} of its norm when the tokens are "
               "shuffled ({clips} clips)",
    "denoise": "sigma {sigma:.2f}: x0 RMS error {x0_rmse:.4f} vs input {input_rmse:.4f} (ratio {ratio:.2f}, "
               "{clips} clips)",
    "prompt": "sigma {sigma:.2f} {attribute:9s} follows prompt {follows_prompt:.2f}  follows swapped word "
              "{follows_swap:.2f}  ({clips} clips)",
}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(SHIPPED_MODEL))
    p.add_argument("--device", default="cpu")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--denoise", action="store_true", help="report the one-step denoising error per σ instead")
    p.add_argument("--shuffle", action="store_true", help="report how much shuffling the tokens changes the output")
    p.add_argument("--sigmas", default=",".join(map(str, SIGMAS)), help="the prompt check's noise levels")
    p.add_argument("--restart", action="store_true",
                   help="sample from held-out clips noised to each σ_start and score what survives the sampler")
    p.add_argument("--starts", default=",".join(map(str, RESTART_SIGMAS)), help="--restart: the σ_start values")
    p.add_argument("--flow-shift", type=float, default=None,
                   help="--restart: sample with this scheduler shift instead of the model's")
    args = p.parse_args(argv)
    pipe = load_pipeline(args.model, args.device)
    if args.restart:
        if args.flow_shift is not None:
            from diffusers import UniPCMultistepScheduler

            pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=args.flow_shift)
        starts = tuple(float(x) for x in args.starts.split(","))
        rows = [dict(r, flow_shift=pipe.scheduler.config.flow_shift) for r in restart_check(pipe, args.clips, starts)]
        check = "restart"
    elif args.shuffle:
        check, rows = "shuffle", position_sensitivity(pipe, args.clips)
    elif args.denoise:
        check, rows = "denoise", denoising_error(pipe, args.clips)
    else:
        sigmas = tuple(float(x) for x in args.sigmas.split(","))
        check, rows = "prompt", conditioning_check(pipe, args.clips, sigmas)
    for r in rows:
        print(LINES[check].format(**r))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
