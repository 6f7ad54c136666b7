"""One transformer forward per attention method at real video-model configurations (random weights, bf16),
with the Amdahl ceiling each sparse method could reach.

    python -m eval.bench_e2e                                   # GPU: Wan 1.3B 480p, Wan 14B 720p, Hunyuan 720p
    python -m eval.bench_e2e --models wan_14b_720p --layers 8  # fewer layers of the same shape
    python -m eval.bench_e2e --toy --out /tmp/e2e.csv          # CPU, toy sizes (what the tests run)

Methods are installed with ``svg2.diffusers.apply`` exactly as in a generation. Per method: one warm-up
forward (kernel compilation, k-means from scratch), then the first sparse step of a generation (k-means
from scratch: ``ms_cold``) and ``--repeats`` later steps (warm-started k-means: ``ms_step``, median), all
timed with CUDA events. Self-attention time per layer comes from the method's own per-call events.

Amdahl ceiling of a sparse step: everything but self-attention (from the fastest dense run) plus, per
layer, its density times that layer's dense self-attention time. ``ceiling_fraction`` = ceiling / measured.
Generation time: ``steps`` x CFG branches, the first ``warmup_fraction`` of steps dense with the fastest
backend, then one cold sparse step and warm ones. Speedups are against the fastest dense backend.
Random-weight latents are smooth fields (structured inputs), so the top-p presets find real clusters.
CPU rows are labelled ``timer=cpu_wall`` and are not speedups of the method.
"""
from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from eval.clock import Clock
from eval.results import atomic_write, environment
from svg2.diffusers import apply, remove
from svg2.methods import build_method, svg2_preset
from svg2.timing import STAGES


@dataclass(frozen=True)
class BenchModel:
    transformer: str              # diffusers class
    config: dict                  # its constructor arguments
    latent: tuple                 # (C, frames, h, w) of the latent input
    text_tokens: int
    preset: str | None            # svg2_preset name
    cfg_branches: int = 2
    block_size: int = 128         # positional blocks
    num_k_clusters: int = 1000
    extra: dict = field(default_factory=dict)  # other forward inputs: name -> shape


_WAN = dict(patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
            freq_dim=256, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
_HUNYUAN = dict(in_channels=16, out_channels=16, num_attention_heads=24, attention_head_dim=128, num_layers=20,
                num_single_layers=40, num_refiner_layers=2, mlp_ratio=4.0, patch_size=2, patch_size_t=1,
                qk_norm="rms_norm", guidance_embeds=True, text_embed_dim=4096, pooled_projection_dim=768,
                rope_theta=256.0, rope_axes_dim=(16, 56, 56))
_HUNYUAN_EXTRA = {"pooled_projections": "pooled_projection_dim"}

MODELS = {
    # Wan 2.1 1.3B, 480x832, 81 frames: 21 x 30 x 52 = 32,760 tokens
    "wan_1.3b_480p": BenchModel("WanTransformer3DModel", dict(_WAN, num_attention_heads=12, ffn_dim=8960,
                                num_layers=30), (16, 21, 60, 104), 512, "wan_480p"),
    # Wan 2.1 14B, 720x1280, 81 frames: 21 x 45 x 80 = 75,600 tokens
    "wan_14b_720p": BenchModel("WanTransformer3DModel", dict(_WAN, num_attention_heads=40, ffn_dim=13824,
                               num_layers=40), (16, 21, 90, 160), 512, "wan_720p"),
    # HunyuanVideo, 720x1280, 129 frames: 33 x 45 x 80 = 118,800 tokens + 256 prompt tokens
    "hunyuan_720p": BenchModel("HunyuanVideoTransformer3DModel", _HUNYUAN, (16, 33, 90, 160), 256,
                               "hunyuan_720p", cfg_branches=1, extra=_HUNYUAN_EXTRA),
}
TOY = {
    "wan_toy": BenchModel("WanTransformer3DModel", dict(_WAN, attention_head_dim=16, num_attention_heads=2,
                          ffn_dim=64, num_layers=2, text_dim=32, freq_dim=32), (16, 3, 16, 16), 16, None,
                          block_size=16, num_k_clusters=16),
    "hunyuan_toy": BenchModel("HunyuanVideoTransformer3DModel", dict(
        _HUNYUAN, num_attention_heads=2, attention_head_dim=24, num_layers=1, num_single_layers=1,
        num_refiner_layers=1, text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(8, 8, 8)),
        (16, 3, 16, 16), 8, None, cfg_branches=1, block_size=16, num_k_clusters=16, extra=_HUNYUAN_EXTRA),
}


def with_layers(spec: BenchModel, layers: int | None) -> BenchModel:
    """The same shapes with ``layers`` transformer blocks (Hunyuan keeps its 1:2 double:single ratio)."""
    if layers is None:
        return spec
    if spec.transformer.startswith("Hunyuan"):
        double = max(1, round(layers / 3))
        return replace(spec, config=dict(spec.config, num_layers=double, num_single_layers=max(1, layers - double)))
    return replace(spec, config=dict(spec.config, num_layers=layers))


def num_layers(spec: BenchModel) -> int:
    return spec.config["num_layers"] + spec.config.get("num_single_layers", 0)


def build_transformer(spec: BenchModel, device, dtype):
    import diffusers

    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random init directly in the bench dtype, on the device
    try:
        with torch.device(device):
            model = getattr(diffusers, spec.transformer)(**spec.config)
    finally:
        torch.set_default_dtype(default)
    return model.eval().requires_grad_(False)


def forward_inputs(spec: BenchModel, device, dtype, seed: int = 0) -> dict:
    """Smooth latent fields (coarse noise upsampled, plus a little fine noise) and random prompt features."""
    g = torch.Generator().manual_seed(seed)
    c, f, h, w = spec.latent
    coarse = torch.randn(1, c, max(2, f // 4), max(2, h // 8), max(2, w // 8), generator=g)
    x = F.interpolate(coarse, size=(f, h, w), mode="trilinear") + 0.1 * torch.randn(1, c, f, h, w, generator=g)
    text_dim = spec.config.get("text_dim", spec.config.get("text_embed_dim"))
    inputs = dict(hidden_states=x, timestep=torch.tensor([500.0]),
                  encoder_hidden_states=torch.randn(1, spec.text_tokens, text_dim, generator=g))
    if spec.transformer.startswith("Hunyuan"):
        inputs.update(encoder_attention_mask=torch.ones(1, spec.text_tokens, dtype=torch.long),
                      pooled_projections=torch.randn(1, spec.config["pooled_projection_dim"], generator=g),
                      guidance=torch.tensor([6000.0]))
    return {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}


def video_tokens(spec: BenchModel) -> int:
    _, f, h, w = spec.latent
    c = spec.config
    pt, ph, pw = (c["patch_size_t"], c["patch_size"], c["patch_size"]) if "patch_size_t" in c else c["patch_size"]
    return (f // pt) * (h // ph) * (w // pw)


def bench_methods(spec: BenchModel, densities, dense_backends,
                  presets=("svg2", "positional"), align_q_tile: int = 0) -> dict[str, tuple[str, dict]]:
    """label -> (method name, config). Fixed densities are top-k budgets of ``d`` x (key clusters or
    blocks); the measured density is in each row. The preset uses its own top-p budget. ``align_q_tile`` > 0
    adds an svg2 row per density with query clusters aligned to that many rows (``svg2_d{d}_a{tile}``)."""
    tokens = video_tokens(spec)
    preset = svg2_preset(spec.preset) if spec.preset else svg2_preset("wan_480p", num_q_clusters=8,
                                                                      num_k_clusters=spec.num_k_clusters)
    common = dict(check_finite=False, profile=True)
    methods = {f"dense_{b}": ("dense", dict(common, dense_backend=b)) for b in dense_backends}
    blocks = math.ceil(tokens / spec.block_size)
    for d in densities:
        methods[f"positional_d{d:g}"] = ("positional", dict(
            common, block_size=spec.block_size, top_p=None, top_k=max(1, round(d * blocks)), min_kc_ratio=0.0))
        methods[f"svg2_d{d:g}"] = ("svg2", dict(
            common, num_q_clusters=preset.num_q_clusters, num_k_clusters=preset.num_k_clusters, top_p=None,
            top_k=max(1, round(d * preset.num_k_clusters)), min_kc_ratio=0.0))
        if align_q_tile:
            methods[f"svg2_d{d:g}_a{align_q_tile}"] = ("svg2", dict(methods[f"svg2_d{d:g}"][1],
                                                                    align_q_tile=align_q_tile))
    if "svg2" in presets:
        methods["svg2_preset"] = ("svg2", dict(asdict(preset), **common))
    if "positional" in presets:  # the same budget and warm-up over fixed 128-token blocks
        budget = {k: getattr(preset, k) for k in ("top_p", "min_kc_ratio", "dense_steps", "dense_layers")}
        methods["positional_preset"] = ("positional", dict(common, block_size=spec.block_size, **budget))
    return methods


def time_method(model, inputs, name: str, config: dict, clock: Clock, repeats: int, steps: int) -> dict:
    """Warm-up forward, then the cold first sparse step and ``repeats`` warm steps of one generation."""
    method = build_method(name, **config)
    apply(model, method)

    def forward() -> float:
        start = clock.mark()
        with torch.no_grad():
            out = model(**inputs, return_dict=False)[0]
        ms = clock.ms(start, clock.mark())
        finite.append(bool(torch.isfinite(out).all()))
        return ms

    def new_generation():
        method.reset(num_steps=steps)
        method.set_step(steps - 1)  # a step past any dense warm-up

    finite: list[bool] = []
    try:
        new_generation()
        forward()  # compile kernels, pick backends
        new_generation()
        cold = forward()
        warm = []
        for _ in range(repeats):
            method.stats.clear()
            warm.append(forward())
        calls = [s.as_row() for s in method.stats]  # the last step's self-attention calls
    finally:
        remove(model)
    return dict(ms_cold=cold, ms_step=statistics.median(warm), ms_step_min=min(warm), finite=all(finite),
                calls=calls)


def summarise(label: str, name: str, result: dict, dense: dict | None, spec: BenchModel, steps: int,
              warmup_fraction: float) -> dict:
    calls = result["calls"]
    attn = sum(sum(v for k, v in c.items() if k.startswith("ms_")) for c in calls)
    row = dict(method=label, method_name=name, ms_step=result["ms_step"], ms_step_min=result["ms_step_min"],
               ms_cold=result["ms_cold"], ms_self_attention=attn, ms_other=result["ms_step"] - attn,
               density=statistics.fmean(c["density"] for c in calls), finite=result["finite"])
    for stage in STAGES:
        row[f"ms_{stage}"] = sum(c.get(f"ms_{stage}", 0.0) for c in calls)
    if dense is not None:  # the fastest dense run: ceiling and speedups
        dense_attn = [sum(v for k, v in c.items() if k.startswith("ms_")) for c in dense["calls"]]
        other = dense["ms_step"] - sum(dense_attn)
        row["ms_ceiling"] = other + sum(c["density"] * a for c, a in zip(calls, dense_attn))
        row["ceiling_fraction"] = row["ms_ceiling"] / row["ms_step"]
        row["speedup_step"] = dense["ms_step"] / row["ms_step"]
        row["speedup_ceiling"] = dense["ms_step"] / row["ms_ceiling"]
        dense_steps = math.ceil(warmup_fraction * steps) if name != "dense" else steps
        sparse_steps = steps - dense_steps
        gen = dense_steps * dense["ms_step"] + (result["ms_cold"] + (sparse_steps - 1) * result["ms_step"]
                                                 if sparse_steps else 0.0)
        row["ms_generation"] = spec.cfg_branches * gen
        row["speedup_generation"] = spec.cfg_branches * steps * dense["ms_step"] / row["ms_generation"]
    return row


def bench_model(model_name: str, spec: BenchModel, args, device, dtype, clock: Clock):
    """Yields one row per method: the dense runs first (the baseline), then each sparse run as it finishes."""
    model = build_transformer(spec, device, dtype)
    inputs = forward_inputs(spec, device, dtype)
    methods = bench_methods(spec, args.densities, args.dense_backends, args.presets, args.align_q_tile)
    base = dict(model=model_name, layers=num_layers(spec), tokens=video_tokens(spec),
                text_tokens=spec.text_tokens, cfg_branches=spec.cfg_branches, dtype=str(dtype).replace("torch.", ""),
                steps=args.steps, warmup_fraction=args.warmup_fraction, repeats=args.repeats, timer=clock.label,
                device=torch.cuda.get_device_name() if clock.cuda else environment()["cpu"],
                commit=environment()["commit"])

    def run(label, name, config):
        try:
            return time_method(model, inputs, name, config, clock, args.repeats, args.steps)
        except Exception as e:  # e.g. a dense backend this device lacks: recorded, not fatal
            print(f"{model_name} {label}: {type(e).__name__}: {e}")
            return e

    def row(label, name, config, result, fastest, dense_runs):
        shown = str({k: v for k, v in config.items() if k != "profile"})
        if isinstance(result, Exception):
            return dict(base, method=label, method_name=name, error=f"{type(result).__name__}: {result}", config=shown)
        r = summarise(label, name, result, fastest, spec, args.steps, args.warmup_fraction)
        for other, d in dense_runs.items():  # speedups against every dense backend, the fastest in speedup_step
            r[f"speedup_vs_{other}"] = d["ms_step"] / r["ms_step"]
        return dict(base, **r, config=shown)

    dense = {label: (name, config, run(label, name, config)) for label, (name, config) in methods.items()
             if name == "dense"}
    dense_runs = {label: r for label, (_, _, r) in dense.items() if not isinstance(r, Exception)}
    fastest = min(dense_runs.values(), key=lambda r: r["ms_step"]) if dense_runs else None
    for label, (name, config, result) in dense.items():
        yield row(label, name, config, result, fastest, dense_runs)
    for label, (name, config) in methods.items():
        if name != "dense":
            yield row(label, name, config, run(label, name, config), fastest, dense_runs)
    del model
    if clock.cuda:
        torch.cuda.empty_cache()


def parse_layers(text: str | None, names: list[str]) -> dict[str, int]:
    """'8' -> every model 8 blocks; 'wan_14b_720p=8,hunyuan_720p=3' -> those models only."""
    if not text:
        return {}
    if "=" not in text:
        return {n: int(text) for n in names}
    pairs = dict(item.split("=") for item in text.split(","))
    unknown = sorted(set(pairs) - set(names))
    if unknown:
        raise SystemExit(f"--layers names {unknown}; expected some of the benchmarked models {names}")
    return {n: int(v) for n, v in pairs.items()}


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(df["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, name in zip(axes[0], models):
        d = df[(df["model"] == name) & df["ms_step"].notna()]
        x = range(len(d))
        ax.bar(x, d["ms_step"] / 1e3, color=["#888" if m == "dense" else "#3a7" for m in d["method_name"]],
               label="measured step")
        if "ms_ceiling" in d:
            ax.scatter(x, d["ms_ceiling"] / 1e3, marker="_", s=400, color="k", zorder=3, label="Amdahl ceiling")
        for i, (_, r) in enumerate(d.iterrows()):
            ax.text(i, r["ms_step"] / 1e3, f"{r['density']:.2f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(list(x), d["method"], rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{name} ({int(d['layers'].iloc[0])} layers, {d['timer'].iloc[0]})", fontsize=9)
        ax.set_ylabel("transformer forward (s)")
        ax.legend(fontsize=7)
    fig.suptitle("One transformer forward per method (labels: density)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--toy", action="store_true", help="toy sizes in float32 on the CPU (or the GPU if present)")
    p.add_argument("--models", default=None, help=f"comma-separated, from {sorted(MODELS)} (toy: {sorted(TOY)})")
    p.add_argument("--layers", default=None,
                   help="transformer blocks: N for every model, or model=N,... (default: the real count)")
    p.add_argument("--densities", default="0.3,0.15", help="fixed densities for positional and svg2 (top-k budgets)")
    p.add_argument("--dense-backends", default=None, help="default cudnn,flash on CUDA; auto on the CPU")
    p.add_argument("--presets", default="svg2,positional", help="upstream top-p presets to run (svg2, positional)")
    p.add_argument("--align-q-tile", type=int, default=0,
                   help="also run svg2 at each density with query clusters aligned to this many rows "
                        "(64: the kernel's tile)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup-fraction", type=float, default=0.2, help="dense steps of a sparse generation")
    p.add_argument("--out", default="results/bench/e2e_h200.csv")
    args = p.parse_args(argv)
    table = TOY if args.toy else MODELS
    names = args.models.split(",") if args.models else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"--models {unknown}: expected some of {sorted(table)}")
    cuda = torch.cuda.is_available()
    if not args.toy and not cuda:
        raise SystemExit("the real configurations need a CUDA device; use --toy on the CPU")
    device, dtype = ("cuda", torch.bfloat16) if cuda and not args.toy else (("cuda" if cuda else "cpu"), torch.float32)
    args.densities = [float(d) for d in args.densities.split(",") if d]
    args.presets = [x for x in args.presets.split(",") if x]
    args.dense_backends = (args.dense_backends.split(",") if args.dense_backends
                           else (["cudnn", "flash"] if device == "cuda" else ["auto"]))
    clock = Clock(device)
    rows = []
    out = Path(args.out)
    layers = parse_layers(args.layers, names)
    for name in names:
        for row in bench_model(name, with_layers(table[name], layers.get(name)), args, device, dtype, clock):
            rows.append(row)
            df = pd.DataFrame(rows)
            atomic_write(out, df.to_csv(index=False).encode())  # after every row: a timeout keeps the rest
    plot(df, out.with_suffix(".png"))
    cols = [c for c in ("model", "method", "density", "ms_step", "ms_ceiling", "ceiling_fraction", "speedup_step",
                        "speedup_generation") if c in df]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return df


if __name__ == "__main__":
    main()
