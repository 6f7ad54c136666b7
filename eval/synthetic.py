"""Synthetic attention inputs with the structure of a video DiT's: tokens gathered around a few hundred
semantic centres (shared by queries and keys, so a group attends itself), a smooth position-dependent
component and noise. Random Gaussian Q/K have no such structure and make every block look equally
important; these give top-p budgets realistic densities."""
from __future__ import annotations

import math

import torch


def structured_qkv(b: int, h: int, s: int, d: int, *, centres: int = 200, strength: float = 1.0, seed: int = 0,
                   dtype=torch.float32, device="cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, H, S, D) q, k, v. ``strength`` scales the semantic part: larger means sparser attention."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    n = b * h
    centre_vecs = torch.randn(n, centres, d, generator=g)
    centre_vecs *= strength * d ** 0.25 * 2 / centre_vecs.norm(dim=-1, keepdim=True) * math.sqrt(d) ** 0.5
    # Group sizes vary (a few large backgrounds, many small objects): Zipf-like weights.
    weights = 1.0 / torch.arange(1, centres + 1, dtype=torch.float32) ** 0.8
    labels = torch.multinomial(weights.expand(n, -1), s, replacement=True, generator=g)  # (N, S)
    pos = torch.arange(s, dtype=torch.float32)[:, None]
    freqs = torch.exp(-torch.arange(d // 2, dtype=torch.float32) * math.log(1e4) / (d // 2))[None]
    position = torch.cat([torch.sin(pos * freqs), torch.cos(pos * freqs)], -1)  # (S, D)
    base = centre_vecs.gather(1, labels[..., None].expand(n, s, d))

    def make():
        return base + 0.5 * position + 0.5 * torch.randn(n, s, d, generator=g)

    q, k = make(), make()
    v = torch.randn(n, s, d, generator=g)
    return tuple(t.reshape(b, h, s, d).to(device=device, dtype=dtype) for t in (q, k, v))
