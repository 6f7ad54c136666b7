"""Pieces shared by the block-scoring baselines (XAttention, SpargeAttn, DraftAttention): contiguous token
blocks, the per-shape tensors a method builds once and keeps on its instance, and their knob checks."""
from __future__ import annotations

import math
from typing import Any, Callable, Hashable

import torch


def block_sizes(tokens: int, block: int, device) -> torch.Tensor:
    """Sizes (ceil(tokens / block),) int64 of contiguous token blocks; the last one holds the remainder."""
    num = math.ceil(tokens / block)
    sizes = torch.full((num,), block, dtype=torch.long, device=device)
    sizes[-1] = tokens - block * (num - 1)
    return sizes


def cached(method, key: Hashable, build: Callable[[], Any]) -> Any:
    """``build()`` once per key on this method instance. Static per-shape tensors (block sizes, permutations)
    are not rebuilt per call, and the eager call before a CUDA graph capture has already made them."""
    store = method.__dict__.setdefault("_static", {})
    if key not in store:
        store[key] = build()
    return store[key]


def check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}; expected a positive integer")


def check_power_of_two(name: str, value, *, at_most: int | None = None) -> None:
    check_positive_int(name, value)
    if value & (value - 1) or (at_most is not None and value > at_most):
        bound = f" <= {at_most}" if at_most is not None else ""
        raise ValueError(f"{name}={value!r}; expected a power of two{bound}")


def check_tokens(name: str, tokens: int, grid: tuple[int, int, int] | None, *, need_grid: bool) -> None:
    """The shape checks every method shares: S >= 1 and, where given (or needed), a grid of S tokens."""
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"{name}: tokens={tokens!r}; expected S >= 1")
    if grid is None:
        if need_grid:
            raise ValueError(f"{name} needs the latent grid (frames, h, w); pass grid=")
        return
    if len(grid) != 3 or any(not isinstance(x, int) or x < 1 for x in grid):
        raise ValueError(f"{name}: grid={tuple(grid)!r}; expected three positive integers (frames, h, w)")
    if math.prod(grid) != tokens:
        raise ValueError(f"{name}: grid={tuple(grid)} has {math.prod(grid)} tokens; q has S={tokens}")
