"""Positional block sparsity: fixed contiguous token blocks (optionally after reordering tokens into
3D (t, h, w) tiles of the latent grid), mean-pooled Q/K per block as the "centroids", and the same
top-p / top-k block budget as SVG2."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from svg2.blocks import BlockMap, centroid_scores, cluster_mass, segment_means, select_by_mass
from svg2.checks import check_int
from svg2.methods.base import AttentionMethod, LayerState
from svg2.methods.registry import register_method
from svg2.methods.selection import BudgetConfig
from svg2.permute import permutation_from_labels
from svg2.plan import Plan


@dataclass
class PositionalConfig(BudgetConfig):
    block_size: int = 128                 # tokens per block (without tiling)
    tile: tuple[int, int, int] | None = None  # (t, h, w) tile of the latent grid; needs grid at call time

    def family(self) -> str:
        return f"tile{tuple(self.tile)}" if self.tile else f"b{self.block_size}"


def tile_labels(grid: tuple[int, int, int], tile: tuple[int, int, int], device=None) -> tuple[torch.Tensor, int]:
    """Tile index of every token of a row-major (T, H, W) grid: (T*H*W,) int64 and the tile count.
    Edge tiles are smaller where the grid is not a multiple of the tile."""
    (t, h, w), (tt, th, tw) = grid, tile
    nt, nh, nw = math.ceil(t / tt), math.ceil(h / th), math.ceil(w / tw)
    ti = torch.arange(t, device=device) // tt
    hi = torch.arange(h, device=device) // th
    wi = torch.arange(w, device=device) // tw
    labels = (ti[:, None, None] * nh + hi[None, :, None]) * nw + wi[None, None, :]
    return labels.reshape(-1), nt * nh * nw


@register_method
class PositionalMethod(AttentionMethod):
    name = "positional"
    Config = PositionalConfig
    order = 10

    def validate_config(self) -> None:
        super().validate_config()
        c = self.config
        c.check_budget()
        if c.tile is None:
            check_int("block_size", c.block_size, minimum=1)
        else:
            c.tile = tuple(c.tile)
            if len(c.tile) != 3 or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in c.tile):
                raise ValueError(f"tile={c.tile!r}; expected three positive integers (t, h, w)")

    def check_shape(self, *, tokens, grid, heads, head_dim) -> None:
        if self.config.tile is not None and grid is None:
            raise ValueError(f"positional tile={self.config.tile} needs the latent grid (frames, h, w); this model "
                             "reports none")

    def plan(self, q, k, v, layer_state: LayerState, grid, timer) -> Plan:
        b, h, s, d = q.shape
        n = b * h
        c = self.config
        perm = None
        with timer.stage("permute"):
            if c.tile is None:
                num = math.ceil(s / c.block_size)
                labels = (torch.arange(s, device=q.device) // c.block_size).expand(n, s)
            else:
                if grid is None:
                    raise ValueError(f"positional tile={c.tile} needs the latent grid (frames, h, w); pass grid=")
                if math.prod(grid) != s:
                    raise ValueError(f"grid={tuple(grid)} has {math.prod(grid)} tokens; q has S={s}")
                tok, num = tile_labels(tuple(grid), c.tile, q.device)
                labels = tok.expand(n, s)
                perm = permutation_from_labels(labels.contiguous(), num)
            # scatter_add, not bincount: bincount syncs with the device on CUDA.
            sizes = torch.zeros(num, dtype=torch.long, device=q.device).scatter_add_(
                0, labels[0], torch.ones_like(labels[0])).expand(n, num)
        with timer.stage("select"):
            cq = segment_means(q.reshape(n, s, d), labels, num)
            ck = segment_means(k.reshape(n, s, d), labels, num)
            mass = cluster_mass(centroid_scores(cq, ck), sizes)
            keep = select_by_mass(mass, sizes, **c.budget())
        sizes4 = sizes.reshape(b, h, num)
        block_map = BlockMap(keep.reshape(b, h, num, num), sizes4, sizes4)
        return Plan(block_map, q_perm=perm, k_perm=perm, mass=mass)
