"""Attention execution: dense SDPA with the fastest backend, and variable-block sparse attention over keys
permuted into cluster order (queries in either order).

The torch path of the sparse op loops over query clusters: each attends the gathered tokens of its kept
key clusters with an exact softmax, so no S×S matrix is ever formed. It is the CPU execution path;
CUDA tensors go to the Triton kernel in ``svg2/kernels`` when it is available.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from svg2.blocks import BlockMap
from svg2.checks import kernel_covers
from svg2.permute import Permutation, permute, unpermute

# Fastest first; measured on the project's H200: cuDNN 207 ms vs flash 330 ms at Wan 14B 720p.
DENSE_BACKENDS = ("cudnn", "flash", "efficient", "math")


def _sdpa_backends(names):
    from torch.nn.attention import SDPBackend

    table = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    return [table[n] for n in names]


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Softmax attention on (B, H, S, D). ``backend='auto'`` tries cuDNN, flash, efficient, math in order."""
    if backend == "auto" and not q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v)
    from torch.nn.attention import sdpa_kernel

    if backend == "auto":
        with sdpa_kernel(_sdpa_backends(DENSE_BACKENDS), set_priority=True):
            return F.scaled_dot_product_attention(q, k, v)
    if backend not in DENSE_BACKENDS:
        raise ValueError(f"backend={backend!r}; expected 'auto' or one of {DENSE_BACKENDS}")
    with sdpa_kernel(_sdpa_backends([backend])):
        return F.scaled_dot_product_attention(q, k, v)


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_map: BlockMap,
                           q_perm: Permutation | None = None) -> torch.Tensor:
    """Attention restricted to the kept (query cluster, key cluster) blocks, on (B, H, S, D).

    k and v are in key-cluster order: key cluster j owns the columns ``[sum(col_sizes[:j]), +col_sizes[j])``.
    Query cluster i owns the rows ``[sum(row_sizes[:i]), +row_sizes[i])`` of q in query-cluster order; with
    ``q_perm`` q is in the original token order (permuted position p holds token ``q_perm.order[n, p]``) and so is
    the output. Rows whose kept key clusters hold no token output 0.

    The one place that chooses the execution: CUDA tensors the Triton kernel covers go to it (it reads q and writes
    the output through the query order itself, and does not check that the sizes sum to S: reading them back would
    synchronise); everything else takes the torch path (permute q, loop over query clusters, un-permute).
    """
    b, h, s, d = q.shape
    if tuple(block_map.keep.shape[:2]) != (b, h):
        raise ValueError(f"block map is for (B, H)={tuple(block_map.keep.shape[:2])}; q has {(b, h)}")
    if all(kernel_covers(t) for t in (q, k, v)):
        from svg2.kernels.varblock import varblock_attention

        return varblock_attention(q, k, v, block_map.keep, block_map.row_sizes, block_map.col_sizes,
                                  q_order=q_perm.order if q_perm is not None else None)
    if q_perm is None:
        return _block_sparse_torch(q, k, v, block_map)
    qp = permute(q.reshape(b * h, s, d), q_perm).reshape(b, h, s, d)
    out = _block_sparse_torch(qp, k, v, block_map)
    return unpermute(out.reshape(b * h, s, d), q_perm).reshape(b, h, s, d)


def _block_sparse_torch(q, k, v, block_map: BlockMap) -> torch.Tensor:
    b, h, s, d = q.shape
    n = b * h
    qf, kf, vf = (t.reshape(n, s, d) for t in (q, k, v))
    keep = block_map.keep.reshape(n, *block_map.keep.shape[-2:])
    row_sizes = block_map.row_sizes.reshape(n, -1)
    col_sizes = block_map.col_sizes.reshape(n, -1)
    if bool((row_sizes.sum(-1) != s).any()) or bool((col_sizes.sum(-1) != s).any()):
        raise ValueError(f"block map row/column sizes do not sum to S={s} for every (B, H)")
    out = torch.zeros_like(qf)
    row_starts = (torch.cumsum(row_sizes, -1) - row_sizes).tolist()
    row_lens = row_sizes.tolist()
    for i in range(n):
        # (QC, S) token-level key mask of every query cluster of this sequence: linear in S, never S×S.
        key_mask = keep[i].repeat_interleave(col_sizes[i], dim=1)
        for c, (start, length) in enumerate(zip(row_starts[i], row_lens[i])):
            if length == 0:
                continue
            idx = key_mask[c].nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            qs = qf[i, start:start + length]
            out[i, start:start + length] = F.scaled_dot_product_attention(
                qs[None], kf[i].index_select(0, idx)[None], vf[i].index_select(0, idx)[None])[0]
    return out.reshape(b, h, s, d)
