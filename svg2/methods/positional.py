"""Positional block sparsity: fixed contiguous token blocks (optionally after reordering tokens into
3D (t, h, w) tiles of the latent grid), mean-pooled Q/K per block as the "centroids", and the same
top-p / top-k block budget as SVG2."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from svg2.blocks import BlockMap, centroid_scores, cluster_mass, segment_means, select_by_mass
from svg2.checks import check_int, check_triple
from svg2.methods.base import AttentionMethod, LayerState
from svg2.methods.registry import register_method
from svg2.methods.selection import BudgetConfig
from svg2.methods.static import check_grid, tile_labels
from svg2.permute import permutation_from_labels
from svg2.plan import Plan


@dataclass
class PositionalConfig(BudgetConfig):
    block_size: int = 128                 # tokens per block (without tiling)
    tile: tuple[int, int, int] | None = None  # (t, h, w) tile of the latent grid; needs grid at call time

    def family(self) -> str:
        return f"tile{tuple(self.tile)}" if self.tile else f"b{self.block_size}"


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
            c.tile = check_triple("tile", c.tile)

    def check_shape(self, *, tokens, grid, heads, head_dim) -> None:
        if self.config.tile is not None:
            check_grid(f"positional tile={self.config.tile}", grid, tokens)

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
