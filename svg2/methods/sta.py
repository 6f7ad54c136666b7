"""Sliding tile attention (STA, arXiv 2502.04507): tokens in tile-major order, each query tile attends the
key tiles of a 3D window around it; every block is a whole (tile, tile) pair, dense or empty.

Source: hao-ai-lab/FastVideo. The mask is the authors' flex oracle ``generate_sta_mask`` in
``fastvideo-kernel/tests/support_flex_sta.py`` @ 2f3d407 (their kernel test checks the kernel against it):
with tile coordinates (t, h, w) and a window ``k`` in tiles per axis, the window centre is
``clamp(q_tile, k // 2, n - 1 - k // 2)`` (torch.clamp: the upper bound wins when they cross) and a key
tile is kept iff ``|centre - kv_tile| <= k // 2`` on every axis; so an even window keeps k + 1 tiles and a
window at least the canvas keeps everything. Video queries attend all text and text attends all (our
joint path). Tiling and windows: ``SlidingTileAttentionImpl`` in
``fastvideo/attention/backends/sliding_tile_attn.py`` @ 37cab18 (``STA_base_tile_size = [6, 8, 8]``;
canvases 30×48×80 Hunyuan and 18×48×80 Wan, whose full windows are (5, 6, 10) and (3, 6, 10)); per
(step, layer, head) windows from the mask-strategy JSON the backend reads (``FASTVIDEO_ATTENTION_CONFIG``,
``assets/mask_strategy_{hunyuan,wan}.json``, keys ``"step_layer_head"``).

Defaults: tile (6, 8, 8); one window for every head, (3, 3, 5) (the window FastVideo's kernel test checks
on the Wan canvas, density 0.25 there); or ``head_windows`` (one per head), or ``strategy`` (a FastVideo
mask-strategy file; e.g. the released Hunyuan one runs steps 0-14 with the full window (5, 6, 10) and
then, per head, (5, 3, 3), (1, 6, 10), (3, 3, 5), (5, 1, 10) or (5, 6, 1)). Precedence: strategy, then
head_windows, then window.

attn-gym (``attn_gym/masks/sta.py::generate_sta_mask_mod_3d`` @ 7fdb85d) takes the window in tokens and
keeps k tiles (k//2 left, k//2 - 1 right) for an even k where FastVideo keeps k + 1; on odd windows the
two are the same mask (tested), on even ones attn-gym's is a subset.

Generalisation: the release needs the canvas to be a multiple of the tile (it only runs 768×1280
canvases). Here a grid that is not gets smaller edge tiles (tile counts rounded up), and the rule runs
on those tile indices; on a multiple it is the release's mask exactly. Note that a window in tiles covers
a different share of a different canvas: (5, 6, 10) is full at 30×48×80 but not at Hunyuan 720p's
33×45×80 (6×6×10 tiles).

Embedded model (16 × 16 × 16): the release tile (6, 8, 8) leaves 3×2×2 tiles, too coarse for a budget;
4×4×4 tiles of 64 tokens give 4 tiles per axis, where odd windows keep 1, 3 or all 4 tiles per axis, so
densities are products of 1/4, 3/4 and 1: windows (3, 3, 1) 0.141, (5, 3, 1) 0.1875, (1, 5, 5) 0.25,
(3, 3, 3) 0.422; 2×4×4 tiles (32 tokens, 8 along time) give (3, 3, 3) 0.211 and (5, 3, 3) 0.352.

Cost: the masks are static (built once per shape and window, cached on the method); a call only indexes
the cached (windows, tiles, tiles) maps by head: nothing proportional to S × S, no host synchronisation.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from svg2.checks import check_triple
from svg2.methods.base import LayerState, MethodConfig
from svg2.methods.registry import register_method
from svg2.methods.static import StaticMethod, expand_block_map, expand_permutation, tile_layout
from svg2.plan import Plan


@dataclass
class STAConfig(MethodConfig):
    budget_fields: ClassVar[tuple[str, ...]] = ("window",)

    tile: tuple[int, int, int] = (6, 8, 8)      # (t, h, w) tokens per tile (release: STA_base_tile_size)
    window: tuple[int, int, int] = (3, 3, 5)     # (t, h, w) in tiles, every head (release kernel test's window)
    head_windows: tuple | None = None            # one (t, h, w) per head; overrides window
    strategy: str | None = None                  # FastVideo mask-strategy JSON ("step_layer_head": [t, h, w]);
    #                                              overrides both (release: assets/mask_strategy_*.json)

    def family(self) -> str:
        return "tile " + "x".join(map(str, self.tile))

    def budget_label(self) -> str:
        if self.strategy is not None:
            return f"strategy {Path(self.strategy).stem}"
        if self.head_windows is not None:
            return "per-head"
        return "w" + "x".join(map(str, self.window))


# Release settings (FastVideo @ 37cab18). The tuned per-head strategies ship as JSON files (pass strategy=);
# the presets give the tile and the uniform window, and the strategy file's 15 full-window steps for Hunyuan.
STA_PRESETS = {
    "hunyuan_720p": dict(tile=(6, 8, 8), window=(5, 3, 3), dense_steps=15),  # most frequent sparse window
    "wan_t2v_14b_720p": dict(tile=(6, 8, 8), window=(3, 3, 5)),
    "wan_t2v_1.3b_480p": dict(tile=(6, 8, 8), window=(3, 3, 5)),
}


def load_strategy(path: str) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """A FastVideo mask-strategy file -> (steps, layers, heads) int64 window ids and the distinct windows."""
    with open(path) as f:
        raw = json.load(f)
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"strategy={path!r} holds no windows; expected a JSON object {{'step_layer_head': [t, h, w]}}")
    entries = {}
    for key, window in raw.items():
        parts = key.split("_")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"strategy={path!r} has key {key!r}; expected 'step_layer_head' integers")
        entries[tuple(map(int, parts))] = check_triple(f"strategy window {key!r}", window)
    shape = tuple(max(k[i] for k in entries) + 1 for i in range(3))
    if len(entries) != math.prod(shape):
        raise ValueError(f"strategy={path!r} has {len(entries)} entries; expected every step, layer and head of "
                         f"{shape[0]} x {shape[1]} x {shape[2]}")
    vocab = sorted(set(entries.values()))
    ids = torch.empty(shape, dtype=torch.long)
    for (s, layer, h), window in entries.items():
        ids[s, layer, h] = vocab.index(window)
    return ids, vocab


def window_keep(grid: tuple[int, int, int], tile: tuple[int, int, int], window: tuple[int, int, int],
                device=None) -> torch.Tensor:
    """(T, T) bool over tiles in tile-major order: key tile kept for query tile (the release's clamp rule)."""
    counts = [math.ceil(g / t) for g, t in zip(grid, tile)]
    idx = torch.arange(math.prod(counts), device=device)
    coords = (idx // (counts[1] * counts[2]), idx // counts[2] % counts[1], idx % counts[2])
    keep = torch.ones(idx.numel(), idx.numel(), dtype=torch.bool, device=device)
    for c, n, k in zip(coords, counts, window):
        centre = c.clamp(k // 2, n - 1 - k // 2)
        keep &= (centre[:, None] - c[None, :]).abs() <= k // 2
    return keep


@register_method
class STAMethod(StaticMethod):
    name = "sta"
    presets = STA_PRESETS
    Config = STAConfig
    order = 40

    def validate_config(self) -> None:
        super().validate_config()
        c = self.config
        c.tile = check_triple("tile", c.tile)
        c.window = check_triple("window", c.window)
        if c.head_windows is not None:
            if len(c.head_windows) == 0:
                raise ValueError("head_windows=(); expected one (t, h, w) window per head")
            c.head_windows = tuple(check_triple(f"head_windows[{i}]", w) for i, w in enumerate(c.head_windows))
        self._strategy = None
        if c.strategy is not None:
            try:
                self._strategy = load_strategy(c.strategy)
            except OSError as e:
                raise ValueError(f"strategy={c.strategy!r} cannot be read ({e}); expected a FastVideo "
                                 "mask-strategy JSON file") from e

    def check_shape(self, *, tokens: int, grid, heads: int, head_dim: int) -> None:
        super().check_shape(tokens=tokens, grid=grid, heads=heads, head_dim=head_dim)
        c = self.config
        if self._strategy is not None and self._strategy[0].shape[2] != heads:
            raise ValueError(f"strategy={c.strategy!r} has {self._strategy[0].shape[2]} heads per layer; "
                             f"the model has {heads}")
        if self._strategy is None and c.head_windows is not None and len(c.head_windows) != heads:
            raise ValueError(f"head_windows has {len(c.head_windows)} windows; the model has {heads} heads")

    def windows(self, layer_state: LayerState, heads: int, device) -> tuple[list, torch.Tensor]:
        """The distinct windows and each of the call's H heads' index into them, (H,) int64 on the device (the
        heads first..first+H of the model's table when ``layer_state.heads`` is (first, total))."""
        c = self.config
        first, total = layer_state.heads or (0, heads)
        if self._strategy is None:
            vocab = sorted(set(c.head_windows)) if c.head_windows is not None else [c.window]
            per_head = c.head_windows or (c.window,) * total
            ids = self.static.get(("ids", tuple(per_head), str(device)), lambda: torch.tensor(
                [vocab.index(w) for w in per_head], device=device))
            return vocab, ids[first:first + heads]
        ids, vocab = self._strategy
        table = self.static.get(("strategy", str(device)), lambda: ids.to(device))
        layer, step = layer_state.layer, layer_state.step
        if not (step < table.shape[0] and layer < table.shape[1]):
            raise ValueError(f"strategy={c.strategy!r} covers {table.shape[0]} steps x {table.shape[1]} layers; "
                             f"got step {step}, layer {layer}")
        return vocab, table[step, layer, first:first + heads]

    def _build(self, s: int, grid, vocab: list, device) -> dict:
        c = self.config
        perm = tile_layout(grid, c.tile, device)  # tile-major, raster order inside each tile
        keep = torch.stack([window_keep(grid, c.tile, w, device) for w in vocab])  # (V, T, T)
        return dict(perm=perm, sizes=perm.sizes[0], keep=keep)

    def plan(self, q, k, v, layer_state: LayerState, grid, timer) -> Plan:
        b, h, s, d = q.shape
        grid = tuple(grid)
        with timer.stage("select"):
            vocab, ids = self.windows(layer_state, h, q.device)
            st = self.static.get((s, grid, str(q.device), tuple(vocab)),
                                 lambda: self._build(s, grid, vocab, q.device))
            keep = st["keep"][0] if len(vocab) == 1 else st["keep"][ids]  # (T, T) shared or (H, T, T)
        perm = expand_permutation(st["perm"], b * h)
        return Plan(expand_block_map(keep, st["sizes"], st["sizes"], b, h), q_perm=perm, k_perm=perm)
