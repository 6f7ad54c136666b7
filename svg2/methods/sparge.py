"""SpargeAttn (arXiv 2502.18137): mean-pooled query/key blocks, a self-similarity gate, and a top-k or CDF
budget over the softmax of the pooled scores.

Source: thu-ml/SpargeAttn @ bfd980b. ``spas_sage_attn/utils.py::get_block_map_meansim_fuse_quant`` (the block
map; its Triton ``triton_bmm_pool_sim_simmean_fuse_quant`` pools and gates, ``fill_block_map_triton`` selects)
as called by ``spas_sage_attn/core.py``: ``spas_sage2_attn_meansim_topk_cuda`` (topk 0.5, simthreshd1 -0.1;
the README's recommended API; the defaults here) and ``spas_sage2_attn_meansim_cuda`` (cdfthreshd 0.98,
simthreshd1 0.6; ``SPARGE_APIS["cdf"]``). Both smooth the keys (subtract the mean key) and use blocks of
BLKQ 64 × BLKK 128 on sm90 (H100/H200, the defaults here) and 128 × 64 elsewhere. The inference examples
(``inference_examples/modify_model/modify_{wan,hunyuan,cogvideox}.py``) call these APIs on every layer and
step with one value (README example for Wan 2.2: topk 0.4); per-head tuned settings live in an external model
zoo (not read), so there are no per-model presets.

The rule, per (batch, head), on the S video tokens in their original order:
1. Query blocks of ``block_q`` and key blocks of ``block_k`` contiguous tokens (the last ones partial); keys
   minus their mean over all S tokens. Per block: the mean token, and the mean cosine similarity of its
   tokens (mean of the Gram matrix of unit vectors); a block is self-similar iff that exceeds simthreshd1.
2. Pooled scores ``pooled_q · pooled_kᵀ / sqrt(D)``, non-similar key blocks at -inf, softmax over key blocks.
3. Per query block, in descending probability: top-k keeps ``int(topk · KB)`` blocks (float32 product, as
   upstream; at least 1); the CDF rule keeps the longest prefix whose cumulative probability is <= cdfthreshd
   (at least one block) — it stops before crossing the threshold, unlike XAttention's rule.
4. Non-similar query blocks keep every key block; non-similar key blocks are kept by every query block;
   ``attention_sink`` also keeps key block 0.

Every step is block-level, so the plan (fixed blocks in the original order) is upstream's block map exactly.
On the embedded model (4,096 tokens in 16 × 16 frames): 64 query blocks of a quarter frame × 32 key blocks of
half a frame; top-k keeps int(topk · 32) key blocks per query block.
Not representable: the CUDA kernel's dynamic PV skipping (``pvthreshd`` 50), decided inside the kernel per
tile; the plan is the block map before it. Differences: upstream pools in the input dtype (fp16/bf16) and
forms the Gram in fp16, we keep fp32; its sort is unstable, ours stable (ties only). Kept as upstream has it:
a partial last block (S not a multiple of the block) is never self-similar, because upstream's Triton kernel
normalises the block's masked rows too (loaded without a fill value, zero in practice: 0/0 = NaN in the Gram
sum), so it is computed whole (one row or
column of blocks; none at the embedded model's 4,096 tokens); a zero token makes its block NaN the same way.
Otherwise the gate only acts where the similarity is at or below simthreshd1: at the top-k default -0.1 every
full block passes.

Cost at Wan 14B 720p (40 heads × 75,600 tokens, D 128; 1,182 query × 591 key blocks): pooling reads q and k once
(1.5 GB bf16, ~0.4 ms at 4 TB/s; Triton kernel svg2/kernels/blockpool.py on CUDA); pooled scores 7 GFLOP;
softmax, sort and scatter over 40 × 1,182 × 591 = 28 M floats (~0.1 GB per pass). Not yet timed on the H200;
estimated ~1 ms, under 5 % of a 65-80 ms sparse call at density 0.25 (DESIGN.md's H200 anchors).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from svg2.blocks import heaviest
from svg2.checks import check_fraction, check_int, kernel_covers
from svg2.methods.base import LayerState, MethodConfig
from svg2.methods.registry import register_method
from svg2.methods.static import StaticMethod, block_sizes, expand_block_map
from svg2.plan import Plan


@dataclass
class SpargeConfig(MethodConfig):
    budget_fields: ClassVar[tuple[str, ...]] = ("topk", "cdfthreshd")

    topk: float | None = 0.5         # fraction of key blocks per query block; 0.5 (meansim_topk API default)
    cdfthreshd: float | None = None  # or the CDF rule (set topk to None); 0.98 (meansim API default)
    simthreshd1: float = -0.1        # self-similarity gate; -0.1 (topk API); 0.6 with the CDF API
    block_q: int = 64                # query block (BLKQ) on sm90; 128 on other GPUs
    block_k: int = 128               # key block (BLKK) on sm90; 64 on other GPUs
    attention_sink: bool = False     # always keep key block 0; False (API default)

    def family(self) -> str:
        rule = "topk" if self.topk is not None else "cdf"
        sink = " sink" if self.attention_sink else ""
        return f"{rule} {self.block_q}x{self.block_k} sim{self.simthreshd1:g}{sink}"

    def budget_label(self) -> str:
        return f"k{self.topk:g}" if self.topk is not None else f"cdf{self.cdfthreshd:g}"


# The two release APIs (spas_sage_attn/core.py); build_method("sparge", **SPARGE_APIS["cdf"]).
SPARGE_APIS = {
    "topk": dict(topk=0.5, cdfthreshd=None, simthreshd1=-0.1),
    "cdf": dict(topk=None, cdfthreshd=0.98, simthreshd1=0.6),
}


def pool_similarity_torch(x: torch.Tensor, block: int, mean: torch.Tensor | None = None):
    """Torch path of ``svg2.kernels.blockpool.pool_similarity``: (N, S, D) -> (N, NB, D), (N, NB) fp32."""
    n, s, d = x.shape
    nb = math.ceil(s / block)
    xf = x.float() if mean is None else x.float() - mean.float()[:, None, :]
    xp = F.pad(xf, (0, 0, 0, nb * block - s)).reshape(n, nb, block, d)
    valid = (torch.arange(nb * block, device=x.device) < s).view(nb, block)
    counts = valid.sum(-1).float()
    pool = xp.sum(2) / counts[:, None]
    unit = torch.where(valid[..., None], xp / xp.norm(dim=-1, keepdim=True), 0.0)  # zero tokens: NaN, as upstream
    total = unit.sum(2)
    return pool, (total * total).sum(-1) / counts ** 2


def pool_similarity(x: torch.Tensor, block: int, mean: torch.Tensor | None = None):
    if kernel_covers(x):
        from svg2.kernels.blockpool import pool_similarity as kernel_pool_similarity

        return kernel_pool_similarity(x, block, mean)
    return pool_similarity_torch(x, block, mean)


def topk_count(topk: float, num_blocks: int) -> int:
    """Upstream's ``(topk * K).to(int64)`` on a float32 tensor, at least one block."""
    return max(1, int(torch.tensor(topk, dtype=torch.float32) * num_blocks))


@register_method
class SpargeMethod(StaticMethod):
    name = "sparge"
    Config = SpargeConfig
    order = 70
    needs_grid = False  # blocks of the original token order

    def validate_config(self) -> None:
        super().validate_config()
        c = self.config
        if (c.topk is None) == (c.cdfthreshd is None):
            raise ValueError(f"topk={c.topk!r}, cdfthreshd={c.cdfthreshd!r}; set exactly one budget")
        if c.topk is not None:
            check_fraction("topk", c.topk)
        if c.cdfthreshd is not None:
            check_fraction("cdfthreshd", c.cdfthreshd)
        if not isinstance(c.simthreshd1, (int, float)) or not -1.0 <= c.simthreshd1 <= 1.0:
            raise ValueError(f"simthreshd1={c.simthreshd1!r}; expected a mean cosine in [-1, 1]")
        check_int("block_q", c.block_q, minimum=1)
        check_int("block_k", c.block_k, minimum=1)

    def plan(self, q, k, v, layer_state: LayerState, grid, timer) -> Plan:
        b, h, s, d = q.shape
        n, c = b * h, self.config
        rows = self.static.get(("rows", s, str(q.device)), lambda: block_sizes(s, c.block_q, q.device))
        cols = self.static.get(("cols", s, str(q.device)), lambda: block_sizes(s, c.block_k, q.device))
        qb, kb = rows.numel(), cols.numel()
        with timer.stage("select"):
            qf, kf = q.reshape(n, s, d), k.reshape(n, s, d)
            pq, sim_q = pool_similarity(qf, c.block_q)
            pk, sim_k = pool_similarity(kf, c.block_k, kf.mean(1, dtype=torch.float32))
            similar_q, similar_k = sim_q > c.simthreshd1, sim_k > c.simthreshd1  # NaN: not similar
            if s % c.block_q:
                similar_q[:, -1] = False  # upstream's partial block: NaN similarity (module docstring)
            if s % c.block_k:
                similar_k[:, -1] = False
            scores = torch.bmm(pq, pk.transpose(1, 2)) * d ** -0.5
            probs = torch.softmax(scores.masked_fill(~similar_k[:, None, :], float("-inf")), dim=-1)
            if c.topk is not None:
                keep = heaviest(probs, topk_count(c.topk, kb))
            else:
                ranked, order = torch.sort(probs, dim=-1, descending=True, stable=True)
                rank = torch.arange(kb, device=q.device)
                keep_ranked = (torch.cumsum(ranked, dim=-1) <= c.cdfthreshd) | (rank == 0)
                keep = torch.zeros_like(keep_ranked).scatter_(-1, order, keep_ranked)
            keep |= ~similar_k[:, None, :] | ~similar_q[:, :, None]
            if c.attention_sink:
                keep[..., 0] = True
        return Plan(expand_block_map(keep.reshape(b, h, qb, kb), rows, cols, b, h))
