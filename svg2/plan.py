"""A plan is steps 1-3 of a sparse call (token permutations and the block map); executing it is step 4-5,
the same for every method: permute k and v into key-cluster order, then variable-block sparse attention, which
reads q and writes the output in the original order (``svg2.attention.block_sparse_attention``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from svg2.attention import block_sparse_attention
from svg2.blocks import BlockMap
from svg2.permute import Permutation, permute
from svg2.timing import StageTimer


@dataclass
class Plan:
    """Token permutations (None = identity) and the block map over the permuted layout."""

    block_map: BlockMap
    q_perm: Permutation | None = None
    k_perm: Permutation | None = None
    kmeans_iters: int = 0
    mass: torch.Tensor | None = None  # (B*H, QC, KC) the method's estimate of each block's share of its query
    #                                   cluster's attention, where it makes one (for measuring, not executing)


def execute_plan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: Plan, timer: StageTimer) -> torch.Tensor:
    """(B, H, S, D) attention in the original token order; values follow the keys."""
    b, h, s, d = q.shape
    with timer.stage("permute"):
        if plan.k_perm is not None:
            k, v = (permute(t.reshape(b * h, s, d), plan.k_perm).reshape(b, h, s, d) for t in (k, v))
    with timer.stage("attend"):
        return block_sparse_attention(q, k, v, plan.block_map, q_perm=plan.q_perm)
