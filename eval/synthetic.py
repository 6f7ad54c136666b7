"""Synthetic attention inputs with the structure of a video DiT's, for benchmarks.

Random Gaussian Q/K have no structure: every key cluster looks equally important and top-p keeps
almost everything (SVG2 lands near density 0.9 on them). Here tokens belong to a few hundred semantic
regions (coarse cells of the latent grid that drift over frames, hashed onto shared centres, so queries
and keys of one region attend each other), plus a smooth position-dependent component and noise.
``scale`` sharpens the softmax: larger means sparser attention.
"""
from __future__ import annotations

import math

import torch


def structured_qkv(heads: int, grid: tuple[int, int, int], head_dim: int, *, scale: float = 0.6, extra: int = 0,
                   centres: int = 256, seed: int = 0, batch: int = 1, dtype=torch.bfloat16, device="cuda"):
    """q, k, v of shape (batch, heads, T*H*W + extra, head_dim); ``extra`` unstructured tokens (text) go last."""
    g = torch.Generator(device=device).manual_seed(seed)
    t, h, w = grid
    s = math.prod(grid) + extra
    tt, hh, ww = torch.meshgrid(*(torch.arange(x, device=device, dtype=torch.float32) for x in grid), indexing="ij")
    cell = ((hh + 0.5 * tt) // 6) * 97 + ((ww + 0.3 * tt) // 8) * 31 + tt // 4
    label = (cell.reshape(-1).long() * 2654435761) % centres
    if extra:
        label = torch.cat([label, torch.randint(0, centres, (extra,), device=device, generator=g)])
    freqs = torch.exp(torch.linspace(0, -4, head_dim // 6 + 1, device=device))
    pos = torch.cat([f(p[..., None] * freqs) for p in (tt, hh, ww) for f in (torch.sin, torch.cos)], -1)
    pos = pos.reshape(-1, pos.shape[-1])[:, :head_dim]
    if pos.shape[-1] < head_dim:
        pos = torch.nn.functional.pad(pos, (0, head_dim - pos.shape[-1]))
    if extra:
        pos = torch.cat([pos, torch.zeros(extra, head_dim, device=device)])
    c = torch.randn(batch, heads, centres, head_dim, device=device, generator=g)
    out = []
    for _ in range(2):  # queries and keys share the centres and the position component
        noise = torch.randn(batch, heads, s, head_dim, device=device, generator=g)
        out.append((scale * (c[:, :, label] + 0.5 * pos) + 0.5 * noise).to(dtype))
    out.append(torch.randn(batch, heads, s, head_dim, device=device, generator=g).to(dtype))
    return tuple(out)
