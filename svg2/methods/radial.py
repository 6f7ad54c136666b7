"""Radial attention (arXiv 2506.19852): a static block mask whose compute density halves with each band of
temporal distance, plus an attention sink.

Source: mit-han-lab/radial-attention @ 72788d4, ``radial_attn/attn_mask.py``: ``gen_log_mask_shrinked``
with ``get_window_width``, ``get_diagonal_split_mask`` and ``shrinkMaskStrict``. Per pair of frames
(i, j), d = |i - j|, g = bit_length(d), L = 2^bit_length(frame_size) / 2^g:

- token mask inside the pair: ``|c - r| <= w`` over in-frame indices, with w = frame_size for d <= 1
  and ``max(L · decay_factor, block_size)`` beyond; the whole pair is dropped unless L >= 128 or
  ``d % int(128 / L) == 0`` (the 128 is hard-coded upstream, independent of the block size);
  Wan (``sink``): every pair with j = 0 is dense;
- the pair's mask is placed on the global block grid (its first row and column fall ``i·fs mod block``
  tokens into a block), cut to ``ceil(fs / block)`` blocks each way, and shrunk: a block is kept when more
  than 60 % of its non-empty columns have more than 1/3 of their rows set (float32, as upstream);
- the pairs' block masks are OR-ed; blocks from ``V // block`` on (the release's text border) are dense.

The mask is the same for every head and input, so it is built once per shape and cached; the plan is the
raw token order in ``block_size`` blocks, exactly the release's block mask (no block/token gap).

Generalisation: the release's BSR plan needs S to be a multiple of the block (its scripts run 768×1280,
3,840-token frames). Here the last block is smaller; that partial block sits at the release's text border
(``V // block``) and so is dense, as it is in the release's Hunyuan path, which pads video + text to a
multiple of 128 (``__main__`` of attn_mask.py).

Defaults: decay_factor 1 (argparse of ``wan_t2v_inference.py`` and ``hunyuan_t2v_inference.py``),
block_size 128, sink on (``model_type="wan"``). Presets from ``scripts/wan_t2v_inference.sh`` (decay 0.2,
1 dense layer, 12 dense steps) and ``scripts/hunyuan_t2v_inference.sh`` (decay 0.95, 0 dense layers, 12
dense steps, no sink).

Embedded model (16 × 16 × 16, 256-token frames): with 128-token blocks the window never drops below a
block, and a band of 128 on a 256-token pair of frames already fills all four blocks, so every kept pair is
dense and decay_factor does nothing; the density is set by the frame pairs only (d <= 1, the splits, the
sink): density 0.6875 (0.656 without the sink). Smaller blocks let the band and decay_factor act: 64-token
blocks 0.518 (decay 0.2) to 0.568 (1.0), 32-token 0.390 / 0.428 / 0.516 (0.2 / 0.5 / 1.0), 16-token
0.316 / 0.396 / 0.497. Sixteen frames are too few for a log-distance mask to get sparser.
At the harness's real shapes the release presets give 0.264 (Wan 14B 720p, decay 0.2) and 0.270
(Hunyuan 720p, 0.95); 0.287 on the release's own Wan canvas 18×48×80.

Cost: none per call (the cached mask is expanded); building it loops over frames once per shape, with
(frames, blocks/frame, blocks/frame, block) integer work per frame — nothing of size S × S.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from svg2.checks import check_int
from svg2.methods.base import LayerState, MethodConfig
from svg2.methods.registry import register_method
from svg2.methods.static import StaticMethod, block_sizes, expand_block_map
from svg2.plan import Plan

_SPLIT_THRESHOLD = 128  # get_diagonal_split_mask's hard-coded threshold


@dataclass
class RadialConfig(MethodConfig):
    budget_fields: ClassVar[tuple[str, ...]] = ("decay_factor",)

    decay_factor: float = 1.0   # scales the band beyond adjacent frames (release: argparse 1; Wan 0.2, Hunyuan 0.95)
    block_size: int = 128       # tokens per block (release: 128)
    sink: bool = True           # first frame's keys dense for every query (release: model_type "wan"; Hunyuan off)

    def family(self) -> str:
        return f"block {self.block_size}" + ("" if self.sink else " no sink")

    def budget_label(self) -> str:
        return f"d{self.decay_factor:g}"


RADIAL_PRESETS = {
    "wan_t2v_14b_720p": dict(decay_factor=0.2, dense_layers=1, dense_steps=12),
    "hunyuan_720p": dict(decay_factor=0.95, dense_layers=0, dense_steps=12, sink=False),
}


def pair_rule(d: int, j: int, frame_size: int, config: RadialConfig) -> float | None:
    """Band half-width (tokens) of the frame pair at distance d with key frame j; inf = dense, None = dropped."""
    if config.sink and j == 0:
        return math.inf
    group = d.bit_length()
    length = 2 ** frame_size.bit_length() / 2 ** group
    if length < _SPLIT_THRESHOLD and d % int(_SPLIT_THRESHOLD / length) != 0:
        return None
    if d <= 1:
        return math.inf
    return max(length * config.decay_factor, config.block_size)


def radial_block_mask(grid: tuple[int, int, int], config: RadialConfig, device=None) -> torch.Tensor:
    """(NB, NB) bool block mask over the frame-major video tokens, NB = ceil(S / block_size)."""
    frames, frame_size = grid[0], grid[1] * grid[2]
    bs = config.block_size
    video = frames * frame_size
    nb = math.ceil(video / bs)
    per = math.ceil(frame_size / bs)  # blocks of one frame pair after the release's cut
    out = torch.zeros(nb, nb, dtype=torch.bool, device=device)
    x = torch.arange(bs, device=device)
    blk = torch.arange(per, device=device)
    for i in range(frames):
        rr = i * frame_size % bs
        rlo = (blk * bs - rr).clamp(0, frame_size)          # local rows of each row block: [rlo, rhi)
        rhi = ((blk + 1) * bs - rr).clamp(0, frame_size)
        rules = [pair_rule(abs(i - j), j, frame_size, config) for j in range(frames)]
        js = [j for j in range(frames) if rules[j] is not None]
        if not js:
            continue
        jt = torch.tensor(js, device=device)
        half = torch.tensor([min(rules[j], frame_size) for j in js], device=device).floor().long()
        rc = jt * frame_size % bs
        c = (blk[:, None] * bs + x[None, :])[None] - rc[:, None, None]  # (J, per, bs) local column index
        valid = (c >= 0) & (c < frame_size)
        lo = torch.maximum(rlo[None, :, None, None], (c - half[:, None, None])[:, None])  # (J, per_a, per_b, bs)
        hi = torch.minimum(rhi[None, :, None, None], (c + half[:, None, None] + 1)[:, None])
        count = (hi - lo).clamp_min(0) * valid[:, None]
        density = count / bs
        nonzero, high = density > 0, density > 1 / 3
        keep = high.sum(-1) / (nonzero.sum(-1) + 1e-9) > 0.6  # (J, per_a, per_b)
        r0 = i * frame_size // bs
        for jj, j in enumerate(js):
            c0 = j * frame_size // bs
            ra, cb = min(per, nb - r0), min(per, nb - c0)
            out[r0:r0 + ra, c0:c0 + cb] |= keep[jj, :ra, :cb]
    border = video // bs
    out[border:, :] = True
    out[:, border:] = True
    return out


@register_method
class RadialMethod(StaticMethod):
    name = "radial"
    presets = RADIAL_PRESETS
    Config = RadialConfig
    order = 50

    def validate_config(self) -> None:
        super().validate_config()
        c = self.config
        if isinstance(c.decay_factor, bool) or not isinstance(c.decay_factor, (int, float)) or not c.decay_factor > 0:
            raise ValueError(f"decay_factor={c.decay_factor!r}; expected a number > 0")
        check_int("block_size", c.block_size, minimum=1)
        if not isinstance(c.sink, bool):
            raise ValueError(f"sink={c.sink!r}; expected True or False")

    def plan(self, q, k, v, layer_state: LayerState, grid, timer) -> Plan:
        b, h, s, d = q.shape
        grid = tuple(grid)
        with timer.stage("select"):
            keep, sizes = self.static.get((s, grid, str(q.device)), lambda: (
                radial_block_mask(grid, self.config, q.device), block_sizes(s, self.config.block_size, q.device)))
        return Plan(expand_block_map(keep, sizes, sizes, b, h))
