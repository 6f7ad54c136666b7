"""The shape-only parts of a plan, shared by the methods whose plan has them (SVG1, sliding tile, radial,
XAttention, SpargeAttn, DraftAttention): token blocks, tile labels and orders of the latent grid, the per-instance
cache that builds each of them once per shape, their expansion to every (batch, head), and the checks of the
grid and of (t, h, w) knobs.

A static part is built as one sequence's tensors (a (1, S) permutation, (QC,) sizes, a (QC, KC) or (H, QC, KC)
mask) and kept in ``StaticMethod.static``; a call only expands it to (B, H, ...) stride-0 views, so it needs no
host synchronisation and the eager call before a CUDA graph capture has already built it.
"""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Hashable

import torch

from svg2.blocks import BlockMap
from svg2.checks import check_triple
from svg2.methods.base import AttentionMethod
from svg2.permute import Permutation, permutation_from_labels


def check_grid(method: str, grid, tokens: int) -> tuple[int, int, int]:
    """The latent grid (frames, h, w) as three positive ints whose product is the token count."""
    if grid is None:
        raise ValueError(f"{method} needs the latent grid (frames, h, w) of the video tokens; pass grid=")
    grid = check_triple("grid", grid, what="(frames, h, w)")
    if math.prod(grid) != tokens:
        raise ValueError(f"grid={grid} has {math.prod(grid)} tokens; q has S={tokens}")
    return grid


def block_sizes(tokens: int, block: int, device=None) -> torch.Tensor:
    """Sizes (ceil(tokens / block),) int64 of contiguous token blocks; the last one holds the remainder."""
    num = math.ceil(tokens / block)
    sizes = torch.full((num,), block, dtype=torch.long, device=device)
    sizes[-1] = tokens - block * (num - 1)
    return sizes


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


def tile_layout(grid: tuple[int, int, int], tile: tuple[int, int, int], device=None) -> Permutation:
    """(1, S) permutation laying the tokens out tile by tile (raster order inside a tile), with tile sizes."""
    labels, num = tile_labels(grid, tile, device)
    return permutation_from_labels(labels[None], num)


def token_major_order(grid: tuple[int, int, int], device=None) -> torch.Tensor:
    """(S,) order that lays a frame-major (frame, position) sequence out position-major: permuted position
    ``p * frames + f`` holds token ``f * frame_size + p`` (the same position of every frame side by side)."""
    frames = grid[0]
    frame_size = grid[1] * grid[2]
    return torch.arange(frames * frame_size, device=device).reshape(frames, frame_size).T.reshape(-1)


def expand_permutation(perm: Permutation, n: int) -> Permutation:
    """A (1, S) permutation for all ``n`` = B*H sequences, as stride-0 views."""
    return Permutation(order=perm.order.expand(n, -1), inverse=perm.inverse.expand(n, -1),
                       sizes=perm.sizes.expand(n, -1))


def expand_block_map(keep: torch.Tensor, row_sizes: torch.Tensor, col_sizes: torch.Tensor, b: int, h: int
                     ) -> BlockMap:
    """keep (QC, KC) shared by every head, (H, QC, KC) one per head or (B, H, QC, KC); sizes (QC,), (KC,)
    shared by all -> a (B, H) block map (stride-0 views where shared)."""
    return BlockMap(keep.expand(b, h, *keep.shape[-2:]), row_sizes.expand(b, h, -1), col_sizes.expand(b, h, -1))


class StaticCache:
    """Static plan parts by key (shape, device, knobs), each built once by the ``build()`` given with it."""

    def __init__(self):
        self._entries: dict = {}

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        if key not in self._entries:
            self._entries[key] = build()
        return self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


class StaticMethod(AttentionMethod):
    """A method that keeps the static parts of its plans in ``self.static`` (kept across generations: they
    depend on the shape only). ``needs_grid``: its plan follows the latent grid; otherwise a grid, when the
    model reports one, is still checked against the token count."""

    needs_grid: ClassVar[bool] = True

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.static = StaticCache()

    def check_shape(self, *, tokens: int, grid, heads: int, head_dim: int) -> None:
        if self.needs_grid or grid is not None:
            check_grid(self.name, grid, tokens)
