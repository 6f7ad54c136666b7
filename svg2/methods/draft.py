"""DraftAttention (arXiv 2505.14708): a low-resolution draft attention map from per-frame average-pooled
queries and keys, its top entries per head kept, tokens reordered so each pooled region is one block.

Source: shawnricecake/draft-attention @ f3c81d5, ``draft_attention.py::Draft_Attention`` (the same class sits in
``wan/wan/modules/attention.py`` and ``hunyuan/hyvideo/modules/attenion.py``): ``sample_qk_attention_2d``,
``attention_percentile_mask_headwise``, ``generate_reorg_indices``, ``forward``. Defaults: pool 8 × 16 latent
rows × columns (a 128-token region = the Block-Sparse-Attention block), ``sparsity_ratio`` 0.9 (class default and
the Hunyuan integration). Wan (``wan/wan/modules/attention.py::flash_attention``): sparsity 0.75, dense in
layer 0 and while the timestep is > 925 (the first 15 of 50 steps at Wan's shift 5). Hunyuan
(``hunyuan/hyvideo/modules/models.py``, pipeline): dense while t > 945 (the first 15 of 50 steps at shift 7)
and in double-stream blocks 0-1 (layers 0-1 here). These are the presets.

The rule, per (batch, head), on the S = T·H·W video tokens:
1. Per frame, ``avg_pool2d`` of q and k over pool_h × pool_w windows (``ceil_mode``: edge windows average the
   tokens they hold), giving R = T·ceil(H/pool_h)·ceil(W/pool_w) regions in (frame, row, column) order.
2. Draft map: softmax over key regions of ``pooled_q · pooled_kᵀ / sqrt(D)``, computed in the input dtype as
   upstream does (bf16 on the GPU: ties among the rounded values keep more than the budget, e.g. 0.30 instead
   of 0.25 for random bf16 inputs on the embedded grid at sparsity 0.75).
3. Per head, over all R² entries at once (not per row): with k = int((1 - (1 - sparsity)) · R²), keep every
   entry >= the k-th smallest (so R² - k + 1 entries without ties); k = 0 keeps all. A query region can keep
   nothing: its tokens output 0.
4. Tokens are reordered region by region (raster order inside a region), so region r is block r of the
   permuted sequence for queries, keys and values alike; the plan's blocks are the regions.

On the embedded model each 16 × 16 frame holds two 8 × 16 regions: R = 32 regions of 128 tokens, a 32 × 32
draft map of which 1,024 - int(sparsity · 1,024) + 1 entries are kept per head.

The plan is upstream's mask exactly where upstream runs (H % pool_h = W % pool_w = 0, pool_h·pool_w = 128,
its 768×512 and 1280×768 Wan/Hunyuan sizes). Elsewhere (the harness's 720p/480p grids: 45 or 30 latent rows,
52 columns) upstream asserts; here edge regions are simply smaller blocks — the variable-block kernel takes
them as they are, and the draft map keeps upstream's unweighted softmax over regions. On HunyuanVideo
upstream keeps its 256 text tokens (padding included) dense; here the prompt goes through the joint path
(valid tokens dense, padding never attended).

Cost at Wan 14B 720p (40 heads × 21·45·80 tokens, D 128, R = 21·6·5 = 630 regions): pooling reads q and k
once (1.5 GB bf16, ~0.4 ms at 4 TB/s); the draft map is 40 × 630² = 16 M entries (its matmul 4 GFLOP) and one
k-th value per head. The reordering is static (built once per shape and cached); applying it is the permute
stage (k and v gathered). Not yet timed on the H200.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from svg2.checks import check_int
from svg2.methods.base import LayerState, MethodConfig
from svg2.methods.registry import register_method
from svg2.methods.static import StaticMethod, expand_block_map, expand_permutation, tile_layout
from svg2.plan import Plan


@dataclass
class DraftConfig(MethodConfig):
    budget_fields: ClassVar[tuple[str, ...]] = ("sparsity",)

    pool_h: int = 8          # latent rows per region; 8 (Wan and Hunyuan integrations)
    pool_w: int = 16         # latent columns per region; 16 (8 × 16 = the 128-token Block-Sparse-Attention block)
    sparsity: float = 0.9    # sparsity_ratio: fraction of the draft map dropped per head; 0.9 (Hunyuan), Wan 0.75

    def family(self) -> str:
        return f"pool {self.pool_h}x{self.pool_w}"

    def budget_label(self) -> str:
        return f"sp{self.sparsity:g}"


_WAN = dict(sparsity=0.75, dense_layers=1, dense_steps=0.3)  # t > 925: steps 0-14 of 50
DRAFT_PRESETS = {
    "wan_t2v_1.3b_480p": _WAN,
    "wan_t2v_14b_720p": _WAN,
    "hunyuan_720p": dict(sparsity=0.9, dense_layers=2, dense_steps=0.3),  # t > 945: steps 0-14 of 50
}


def pool_regions(x: torch.Tensor, grid: tuple[int, int, int], pool: tuple[int, int]) -> torch.Tensor:
    """(N, S, D) tokens of a (T, H, W) grid -> (N, R, D) per-frame region means, in x's dtype (upstream's
    ``avg_pool2d``, read through a channels-last view: no copy of x)."""
    n, s, d = x.shape
    t, hh, ww = grid
    frames = x.reshape(n * t, hh, ww, d).permute(0, 3, 1, 2)
    pooled = F.avg_pool2d(frames, kernel_size=pool, stride=pool, ceil_mode=True)  # (N*T, D, nh, nw)
    return pooled.permute(0, 2, 3, 1).reshape(n, -1, d)


def percentile_mask(draft: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Upstream's per-head percentile rule on the draft map (N, R, R) -> keep (N, R, R) bool."""
    n, r, _ = draft.shape
    total = r * r
    drop = int((1.0 - (1 - sparsity)) * total)  # upstream's arithmetic: r = 1 - sparsity, k = int((1 - r) * n)
    if drop == 0:
        return torch.ones(n, r, r, dtype=torch.bool, device=draft.device)
    if drop >= total:
        return torch.zeros(n, r, r, dtype=torch.bool, device=draft.device)
    # The largest of the `drop` smallest entries (upcast: exact for bf16 values, and kthvalue takes any dtype).
    threshold = torch.kthvalue(draft.reshape(n, total).float(), drop, dim=-1).values
    return draft.float() >= threshold[:, None, None]


@register_method
class DraftMethod(StaticMethod):
    name = "draft"
    presets = DRAFT_PRESETS
    Config = DraftConfig
    order = 80

    def validate_config(self) -> None:
        super().validate_config()
        c = self.config
        check_int("pool_h", c.pool_h, minimum=1)
        check_int("pool_w", c.pool_w, minimum=1)
        if not isinstance(c.sparsity, (int, float)) or not 0.0 <= c.sparsity < 1.0:
            raise ValueError(f"sparsity={c.sparsity!r}; expected a fraction in [0, 1) of the draft map to drop")

    def layout(self, n: int, grid: tuple[int, int, int], device):
        """The static reordering (built once per shape): Permutation over (N, S) and region sizes (R,)."""
        c = self.config
        perm = self.static.get((tuple(grid), str(device)), lambda: tile_layout(grid, (1, c.pool_h, c.pool_w), device))
        return expand_permutation(perm, n), perm.sizes[0]

    def plan(self, q, k, v, layer_state: LayerState, grid, timer) -> Plan:
        b, h, s, d = q.shape
        n, c = b * h, self.config
        grid = tuple(grid)
        perm, sizes = self.layout(n, grid, q.device)
        r = sizes.numel()
        with timer.stage("select"):
            pool = (c.pool_h, c.pool_w)
            pq, pk = (pool_regions(t.reshape(n, s, d), grid, pool) for t in (q, k))
            draft = torch.softmax(torch.bmm(pq, pk.transpose(1, 2)) / math.sqrt(d), dim=-1)
            keep = percentile_mask(draft, c.sparsity)
        return Plan(expand_block_map(keep.reshape(b, h, r, r), sizes, sizes, b, h), q_perm=perm, k_perm=perm)
