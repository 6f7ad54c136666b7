"""SVG1 (Sparse VideoGen, arXiv 2502.01776): every head, every call, picks a spatial or a temporal mask.

Source: svg-project/Sparse-VideoGen @ 5ce7b01. ``svg/models/wan/utils.py`` (Wan) and
``svg/models/hyvideo/utils.py`` (Hunyuan): ``sparsity_to_width``, ``get_attention_mask`` (the two
profiling masks), ``generate_temporal_head_mask_mod`` (the mask applied to both kinds of head);
``WanAttn_SVGAttn_Processor2_0.sample_mse`` / ``Hunyuan_SVGAttn_Processor2_0.sample_mse`` in
``svg/models/{wan,hyvideo}/attention.py``; ``svg/models/wan/placement.py`` (head placement).

The rule, as the release runs it (flex_attention backend, the Wan T2V and Hunyuan default):

1. Profile. ``num_sampled_rows`` query rows drawn uniformly (with replacement) from the first
   ``min(sample_max_row, S)`` tokens; their dense attention output is compared (mean squared error) with
   their output under two profiling masks: *spatial*, ``|i//128 - j//128| < (m·frame_size)//128`` in the
   frame-major order (m = 2 Wan, 1.5 Hunyuan; Wan adds the first frame's key columns as a sink), and
   *temporal*, the same mask in the token-major order (token ``f·fs + p`` at position ``p·frames + f``).
   A head is temporal when its temporal error is smaller (ties: spatial, like ``argmin``).
2. Place. Temporal heads' q, k, v are laid out token-major, spatial heads' stay frame-major.
3. Attend with one band mask in each head's own layout: the band width in tokens comes from the
   ``sparsity`` knob (really the kept fraction): ``width = T·(1 - sqrt(1 - s'))``, ``s' = s - 2·ctx/T``
   for ``T = ctx + S`` (``sparsity_to_width``), rounded to a multiple of 128. Wan:
   ``|i - j| <= ceil(width/128)·128 or j < frame_size`` (the sink is in the head's layout, so a temporal
   head's sink is the first ``frame_size/frames`` positions of every frame); Hunyuan:
   ``|i - j| < floor(width/128)·128``, no sink (its text rows and columns are dense: our joint path).

Block rule (the kernel runs whole blocks): the plan cuts each head's layout into ``block_size``-token
blocks and keeps every block that holds at least one pair of the token mask. That is the block set
flex_attention visits for this mask_mod at its default 128 blocks; flex additionally masks the partial
blocks at token level, we attend them whole, so the plan keeps a superset. With 128-aligned band widths
the partial blocks are the two diagonals ``|I - J| = W/128`` (half full each). Token mask vs plan
density at the release settings: Wan 14B 720p (sparsity 0.3) 0.3402 vs 0.3427, Hunyuan 720p (0.25)
0.2456 vs 0.2466, Wan 1.3B 480p (0.25) 0.2948 vs 0.3006; the embedded model (0.25) 0.339 vs 0.364 with
128-token blocks, 0.352 with 64 (``tests/svg2/test_svg1.py`` checks the superset and the gap on the
Wan 480p grid).

Defaults (``SVG1Config``): sparsity 0.25 (``wan_t2v_inference.py`` argparse, Hunyuan 720p script),
num_sampled_rows 64 (every script), sample_mse_max_row 10000 (argparse). Presets from the scripts
(``scripts/wan/wan_t2v_720p_svg.sh``, ``wan_i2v_720p_svg.sh``, ``scripts/hyvideo/hyvideo_t2v_720p_svg.sh``);
the release turns ``first_times_fp`` / ``first_layers_fp`` into ``floor(f·50)`` steps and
``floor(f·layers)`` layers. Wan I2V 720p runs the flashinfer backend upstream (``gen_temporal_mask``:
block centres, blocks of the largest divisor of the frame size below 256); the preset uses this
module's flex rule.

attn-gym (``attn_gym/masks/svg.py`` @ 7fdb85d) is a cross-check with known differences: its spatial mask
(floor, ``<``, no sink) is the Hunyuan rule here exactly (tested at block level); with its sink on it
still rounds down with ``<`` where the release's Wan rule rounds up with ``<=`` (90.4 % of entries agree
at grid (5, 16, 24), sparsity 0.3), and its temporal mask keeps ``|in-frame index difference| <
width·fs/frames`` in the original order, not the release's token-major band (79.4 % agree with the Wan
rule, 95.4 % with the Hunyuan rule there).

Differences from the release, on purpose: rows are drawn on the device from a pool of 64 seeded draws
(one per call of a (layer, branch), cycling), not from the host RNG, so a call needs no host
synchronisation and can be captured in a CUDA graph; the profiling softmax runs in float32; Hunyuan's
profile sees video keys only (the release also scores the text columns, dense in both masks).

Embedded model (16 × 16 × 16 grid, 256-token frames, ctx 0): the 128-token rounding is two rounding
steps per frame, so the band never empties (ceil for Wan; floor would need width < 128, i.e. sparsity
< 0.062). sparsity 0.1 / 0.15 / 0.25 / 0.35 give bands of 256 / 384 / 640 / 896 tokens (width 210 / 320 /
549 / 794) plus the 256-token sink: plan densities 0.206 / 0.261 / 0.364 / 0.460 (token masks 0.178 /
0.234 / 0.339 / 0.437); the profiling band is |ΔI| < 4 blocks (2 frames).

Cost of the selection at Wan 14B 720p (40 heads × 75,600 tokens, D 128, 64 rows): one (64 × S) score
matmul and three (64 × S) · (S × D) products per head, 40 · 4 · 2 · 64 · 75,600 · 128 = 0.20 TFLOP
(bf16), and about 5 GB of float32 score traffic (softmaxes over 40 · 64 · 75,600 scores, in chunks of
2^24): about 2 ms on an H200 against an attention call of about 80 ms at the realised density (2.5 %).
The mask itself is static (built once per shape); the per-head layout is a ``torch.where`` between two
cached orders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from svg2.checks import check_fraction, check_int
from svg2.methods.base import LayerState, MethodConfig
from svg2.methods.registry import register_method
from svg2.methods.static import StaticMethod, block_sizes, check_grid, expand_block_map, token_major_order
from svg2.permute import Permutation, permutation_from_order
from svg2.plan import Plan

# Profiling band, in frames, of each rule's get_attention_mask (hard-coded upstream); and whether the rule has
# the first-frame sink column.
_PROFILE_FRAMES = {"wan": 2, "hunyuan": 1.5}
_SINK = {"wan": True, "hunyuan": False}
_DRAWS = 64            # seeded draws of sampled rows kept on the device, cycled call by call
_CHUNK = 1 << 24       # profiling scores per chunk (float32: 64 MiB)


@dataclass
class SVG1Config(MethodConfig):
    budget_fields: ClassVar[tuple[str, ...]] = ("sparsity",)

    sparsity: float = 0.25       # kept fraction the band width comes from (release: 0.25; 0.3 in the Wan 720p scripts)
    num_sampled_rows: int = 64   # query rows of the profiling MSE (release: 64 in every script)
    sample_max_row: int = 10000  # rows are drawn from the first min(this, S) queries (release: sample_mse_max_row)
    rule: str = "wan"            # "wan": ceil-rounded |Δ| <= W + first-frame sink, profile band 2 frames;
    #                              "hunyuan": floor-rounded |Δ| < W, no sink, profile band 1.5 frames
    context_length: int = 0      # text tokens counted by sparsity_to_width (release: Wan 0, Hunyuan 256)
    round_to: int = 128          # band and profiling-block granularity (release: 128, hard-coded)
    block_size: int = 128        # plan block in each head's layout (flex_attention's default block)
    seed: int = 0                # seed of the sampled-row draws

    def family(self) -> str:
        return f"{self.rule} b{self.block_size}"

    def budget_label(self) -> str:
        return f"s{self.sparsity:g}"


# Release scripts (Sparse-VideoGen @ 5ce7b01); dense warm-up as the release floors it for 50 steps.
SVG1_PRESETS = {
    # wan_t2v_inference.py argparse defaults (no 1.3B script): sparsity 0.25, floor(0.075·50) = 3 steps,
    # floor(0.025·30) = 0 layers.
    "wan_t2v_1.3b_480p": dict(sparsity=0.25, dense_steps=3, dense_layers=0),
    # scripts/wan/wan_t2v_720p_svg.sh: sparsity 0.3, first_times_fp 0.2, first_layers_fp 0.03 (floor(1.2) = 1).
    "wan_t2v_14b_720p": dict(sparsity=0.3, dense_steps=0.2, dense_layers=1),
    # scripts/wan/wan_i2v_720p_svg.sh: sparsity 0.3, first_times_fp 0.35 (floor(17.5) = 17 of 50 steps).
    "wan_i2v_14b_720p": dict(sparsity=0.3, dense_steps=0.34, dense_layers=1),
    # scripts/hyvideo/hyvideo_t2v_720p_svg.sh: sparsity 0.25, first_times_fp 0.1, first_layers_fp 0.03 of 60.
    "hunyuan_720p": dict(sparsity=0.25, dense_steps=0.1, dense_layers=1, rule="hunyuan", context_length=256),
}


def band_width(config: SVG1Config, grid: tuple[int, int, int]) -> tuple[float, int]:
    """(unrounded width, rounded band W) in tokens, with the release's float operations in its order."""
    frames, frame_size = grid[0], grid[1] * grid[2]
    seq_len = config.context_length + frames * frame_size
    total = seq_len ** 2
    kept = (config.sparsity * total - 2 * seq_len * config.context_length) / total
    if kept <= 0:
        return 0.0, 0
    width_frame = seq_len * (1 - math.sqrt(1 - min(kept, 1.0))) / frame_size
    scaled = width_frame * frame_size / config.round_to
    rounded = math.ceil(scaled) if config.rule == "wan" else math.floor(scaled)
    return width_frame * frame_size, rounded * config.round_to


def profile_band(config: SVG1Config, grid: tuple[int, int, int]) -> float:
    """Profiling band in blocks of ``round_to``: ``(m · frame_size) // round_to`` (a float for Hunyuan's 1.5)."""
    return _PROFILE_FRAMES[config.rule] * grid[1] * grid[2] // config.round_to


@register_method
class SVG1Method(StaticMethod):
    name = "svg1"
    presets = SVG1_PRESETS
    Config = SVG1Config
    order = 30

    def validate_config(self) -> None:
        super().validate_config()
        c = self.config
        check_fraction("sparsity", c.sparsity)
        if c.rule not in _PROFILE_FRAMES:
            raise ValueError(f"rule={c.rule!r}; expected one of {sorted(_PROFILE_FRAMES)}")
        for name in ("num_sampled_rows", "sample_max_row", "round_to", "block_size"):
            check_int(name, getattr(c, name), minimum=1)
        check_int("context_length", c.context_length, hint="text tokens counted by the band width")

    def check_shape(self, *, tokens: int, grid, heads: int, head_dim: int) -> None:
        c = self.config
        grid = check_grid("svg1", grid, tokens)
        width, band = band_width(c, grid)
        if band <= 0:
            raise ValueError(
                f"svg1 band is empty: sparsity={c.sparsity} at {grid[0]} frames of {grid[1] * grid[2]} tokens "
                f"(context_length={c.context_length}) gives a width of {width:.1f} tokens, which the {c.rule!r} "
                f"rule rounds down to 0 (multiples of round_to={c.round_to}); expected a larger sparsity, a "
                "smaller round_to or rule='wan' (rounds up)")
        if profile_band(c, grid) < 1:
            raise ValueError(
                f"svg1 profiling band is empty: {_PROFILE_FRAMES[c.rule]} frames of {grid[1] * grid[2]} tokens "
                f"are less than one block of round_to={c.round_to}; expected round_to <= "
                f"{int(_PROFILE_FRAMES[c.rule] * grid[1] * grid[2])}")

    def _build(self, s: int, grid: tuple[int, int, int], device) -> dict:
        c = self.config
        frame_size = grid[1] * grid[2]
        _, band = band_width(c, grid)
        sizes = block_sizes(s, c.block_size, device)
        starts = torch.arange(sizes.numel(), device=device) * c.block_size
        ends = starts + sizes - 1
        # Smallest |i - j| between the tokens of query block I and key block J (0 on the diagonal).
        gap = torch.maximum(starts[None, :] - ends[:, None], starts[:, None] - ends[None, :]).clamp_min(0)
        keep = gap <= band if c.rule == "wan" else gap < band
        if _SINK[c.rule]:
            keep |= (starts < frame_size)[None, :]
        tm = permutation_from_order(token_major_order(grid, device)[None], sizes[None])
        spatial = permutation_from_order(torch.arange(s, device=device)[None], sizes[None])
        pos_tm = tm.inverse[0]  # position of each original token in the token-major layout
        tokens = torch.arange(s, device=device)
        gen = torch.Generator().manual_seed(c.seed)
        draws = torch.randint(0, min(c.sample_max_row, s), (_DRAWS, c.num_sampled_rows), generator=gen)
        return dict(keep=keep, sizes=sizes, tm=tm, spatial=spatial, draws=draws.to(device),
                    block_s=tokens // c.round_to, block_t=pos_tm // c.round_to,
                    sink_s=tokens < frame_size, sink_t=pos_tm < frame_size, band=profile_band(c, grid))

    def static_plan(self, s: int, grid, device) -> dict:
        grid = tuple(grid)
        return self.static.get((s, grid, str(device)), lambda: self._build(s, grid, device))

    def profile_masks(self, rows: torch.Tensor, st: dict) -> torch.Tensor:
        """(2, R, S) bool: the spatial and temporal profiling masks' rows for sampled queries ``rows`` (R,)."""
        masks = []
        for blocks, sink in ((st["block_s"], st["sink_s"]), (st["block_t"], st["sink_t"])):
            m = (blocks[rows][:, None] - blocks[None, :]).abs() < st["band"]
            if _SINK[self.config.rule]:
                m |= sink[None, :]
            masks.append(m)
        return torch.stack(masks)

    def sampled_errors(self, q, k, v, rows: torch.Tensor, st: dict) -> torch.Tensor:
        """(N, 2) float32: MSE of the sampled rows' output under the spatial / temporal mask vs dense."""
        n, s, d = q.shape
        masks = self.profile_masks(rows, st)
        sq = q[:, rows]  # (N, R, D)
        chunk = max(1, _CHUNK // (rows.numel() * s))
        errors = []
        for i in range(0, n, chunk):
            part = slice(i, i + chunk)
            scores = torch.matmul(sq[part], k[part].transpose(1, 2)).float() / math.sqrt(d)  # (c, R, S)
            vv = v[part]
            dense = torch.matmul(torch.softmax(scores, -1).to(v.dtype), vv).float()
            errs = []
            for m in masks:
                probs = torch.softmax(scores.masked_fill(~m, float("-inf")), -1).to(v.dtype)
                errs.append((torch.matmul(probs, vv).float() - dense).pow(2).mean(dim=(1, 2)))
            errors.append(torch.stack(errs, -1))
        return torch.cat(errors)

    def plan(self, q, k, v, layer_state: LayerState, grid, timer) -> Plan:
        b, h, s, d = q.shape
        n = b * h
        st = self.static_plan(s, grid, q.device)
        with timer.stage("select"):
            rows = st["draws"][layer_state.calls % _DRAWS]
            layer_state.calls += 1
            errors = self.sampled_errors(*(t.reshape(n, s, d) for t in (q, k, v)), rows, st)
            temporal = errors[:, 1] < errors[:, 0]  # (N,) ties stay spatial
        with timer.stage("permute"):
            pick = temporal[:, None]
            perm = Permutation(order=torch.where(pick, st["tm"].order, st["spatial"].order),
                               inverse=torch.where(pick, st["tm"].inverse, st["spatial"].inverse),
                               sizes=st["sizes"].expand(n, -1))
        block_map = expand_block_map(st["keep"], st["sizes"], st["sizes"], b, h)
        return Plan(block_map, q_perm=perm, k_perm=perm)
