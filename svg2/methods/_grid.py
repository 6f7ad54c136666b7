"""Helpers shared by the methods whose plan follows the latent grid (SVG1, sliding tile, radial).

Their masks depend only on the shape, so each method builds the static part of its plan once per
(tokens, grid, device, knobs) and keeps it in a ``StaticCache`` on the method instance; a call then only
expands cached tensors to (B, H, ...) views, which needs no host synchronisation.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from svg2.blocks import BlockMap
from svg2.methods.base import AttentionMethod
from svg2.permute import Permutation


def check_grid(method: str, grid, tokens: int) -> tuple[int, int, int]:
    """The latent grid (frames, h, w) as three positive ints whose product is the token count."""
    if grid is None:
        raise ValueError(f"{method} needs the latent grid (frames, h, w) of the video tokens; pass grid=")
    grid = tuple(grid)
    if len(grid) != 3 or any(not isinstance(x, int) or isinstance(x, bool) or x < 1 for x in grid):
        raise ValueError(f"grid={grid!r}; expected three positive integers (frames, h, w)")
    if math.prod(grid) != tokens:
        raise ValueError(f"grid={grid} has {math.prod(grid)} tokens; q has S={tokens}")
    return grid


def check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}; expected a positive integer")


def check_triple(name: str, value) -> tuple[int, int, int]:
    """(t, h, w) of positive ints (lists from YAML become tuples)."""
    try:
        triple = tuple(value)
    except TypeError:
        triple = None
    if triple is None or len(triple) != 3 or any(not isinstance(x, int) or isinstance(x, bool) or x < 1
                                                 for x in triple):
        raise ValueError(f"{name}={value!r}; expected three positive integers (t, h, w)")
    return triple


def block_sizes(total: int, block: int, device=None) -> torch.Tensor:
    """Sizes (ceil(total / block),) int64 of consecutive blocks of ``block`` tokens; the last one may be smaller."""
    sizes = torch.full((math.ceil(total / block),), block, dtype=torch.long, device=device)
    sizes[-1] = total - block * (sizes.numel() - 1)
    return sizes


def token_major_order(grid: tuple[int, int, int], device=None) -> torch.Tensor:
    """(S,) order that lays a frame-major (frame, position) sequence out position-major: permuted position
    ``p * frames + f`` holds token ``f * frame_size + p`` (the same position of every frame side by side)."""
    frames = grid[0]
    frame_size = grid[1] * grid[2]
    return torch.arange(frames * frame_size, device=device).reshape(frames, frame_size).T.reshape(-1)


def static_permutation(order: torch.Tensor, sizes: torch.Tensor) -> Permutation:
    """A (1, S) permutation with its (1, K) run lengths, to expand per call."""
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
    return Permutation(order=order[None], inverse=inverse[None], sizes=sizes[None])


def expand_permutation(perm: Permutation, n: int) -> Permutation:
    """The same permutation for all ``n`` = B*H sequences, as stride-0 views."""
    return Permutation(order=perm.order.expand(n, -1), inverse=perm.inverse.expand(n, -1),
                       sizes=perm.sizes.expand(n, -1))


def expand_block_map(keep: torch.Tensor, row_sizes: torch.Tensor, col_sizes: torch.Tensor, b: int, h: int
                     ) -> BlockMap:
    """keep (QC, KC) shared by every head, or (H, QC, KC) one per head; sizes (QC,), (KC,) -> a (B, H) map."""
    if keep.dim() == 2:
        keep = keep[None]
    return BlockMap(keep[None].expand(b, h, -1, -1), row_sizes.expand(b, h, -1), col_sizes.expand(b, h, -1))


class StaticCache:
    """Per-shape static plan parts, built once by ``build()`` and kept (key: tokens, grid, device, knobs)."""

    def __init__(self):
        self._entries: dict = {}

    def get(self, key, build: Callable[[], object]):
        if key not in self._entries:
            self._entries[key] = build()
        return self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


class GridMethod(AttentionMethod):
    """A method whose plan follows the latent grid: it needs ``grid`` and keeps its static plan parts."""

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.static = StaticCache()

    def check_shape(self, *, tokens: int, grid, heads: int, head_dim: int) -> None:
        check_grid(self.name, grid, tokens)
