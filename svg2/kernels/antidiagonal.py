"""XAttention's block scores in one Triton pass: strided antidiagonal Q·Kᵀ, row softmax, block sums.

With R = S_pad / stride reshaped rows and columns, cell (i, j) scores
``sum_m q[i*stride + stride-1-m] · k[j*stride + m]`` (the antidiagonal of a stride × stride cell of the token
scores), scaled by 1/sqrt(D)/stride. ``block_mass`` returns, per (query block, key block) of ``block`` tokens,
the sum over its (block/stride)² cells of the row-softmaxed scores (the softmax runs over all R columns).
Tokens at or beyond S read as zeros (upstream pads with zero tokens; zero keys take part in the softmax);
query rows at or beyond ceil(S / stride) contribute nothing (upstream zeroes them after the softmax).

One program owns BM reshaped query rows (whole query blocks) and streams every key tile once, so the
scores are computed once (the FLOPs of the scoring itself, no second pass): it keeps a running row max
and sum, writes each tile's per-(row, key block) exp-sums relative to the running max with that max, and
at the end rescales its own rows by exp2(max_tile - max_final) / sum and reduces them into block sums.
That intermediate is (N, rows, key blocks) fp32, 1/(block/stride) of the score matrix, and never leaves
the program that wrote it (read back after a barrier). The S×S/stride scores are never materialised.

Limits: D a power of two >= 16; stride and block powers of two with stride <= block; contiguous D.
Skips: causal masks (upstream's video path is non-causal). Not yet timed on a GPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl


@dataclass(frozen=True)
class AntidiagonalConfig:
    block_m: int = 128  # reshaped query rows per program (rounded up to whole blocks)
    block_n: int = 128  # reshaped key columns per tile
    num_warps: int = 8
    num_stages: int = 2


# Fixed small tiles for interpreter tests; the GPU default is a first guess, not yet swept on the H200.
ANTIDIAGONAL_CONFIGS = {"test": AntidiagonalConfig(16, 16, 4, 1), "h200": AntidiagonalConfig(128, 128, 8, 2)}


@triton.jit
def _antidiagonal_mass_kernel(q_ptr, k_ptr, e_ptr, m_ptr, a_ptr, S, R, R_VALID, RQ, KB, NT, QB,
                              sqn, sqs, skn, sks, scale,
                              STRIDE: tl.constexpr, D: tl.constexpr, RB: tl.constexpr,
                              BM: tl.constexpr, BN: tl.constexpr, IEEE: tl.constexpr):
    pid = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    KBT: tl.constexpr = BN // RB  # key blocks per tile
    QBT: tl.constexpr = BM // RB  # query blocks per program
    rows = pid * BM + tl.arange(0, BM)
    d = tl.arange(0, D)
    m_i = tl.full([BM], float("-inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    for t in range(0, NT):
        cols = t * BN + tl.arange(0, BN)
        acc = tl.zeros([BM, BN], tl.float32)
        for mm in range(0, STRIDE):
            qt = rows * STRIDE + (STRIDE - 1 - mm)  # the query side runs backwards: antidiagonals
            kt = cols * STRIDE + mm
            qv = tl.load(q_ptr + n * sqn + qt[:, None] * sqs + d[None, :], mask=(qt < S)[:, None], other=0.0)
            kv = tl.load(k_ptr + n * skn + kt[:, None] * sks + d[None, :], mask=(kt < S)[:, None], other=0.0)
            if IEEE:
                acc += tl.dot(qv, tl.trans(kv), input_precision="ieee")
            else:
                acc += tl.dot(qv, tl.trans(kv))
        x = tl.where((cols < R)[None, :], acc * scale, float("-inf"))  # log2 domain
        m_new = tl.maximum(m_i, tl.max(x, axis=1))
        p = tl.exp2(x - m_new[:, None])
        l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(p, axis=1)
        m_i = m_new
        e = tl.sum(tl.reshape(p, [BM, KBT, RB]), axis=2)  # (BM, KBT) exp-sums relative to m_new
        kb = t * KBT + tl.arange(0, KBT)
        tl.store(e_ptr + (n * RQ + rows[:, None]) * KB + kb[None, :], e,
                 mask=(rows < RQ)[:, None] & (kb < KB)[None, :])
        tl.store(m_ptr + (n * RQ + rows) * NT + t, m_new, mask=rows < RQ)
    tl.debug_barrier()  # the rows written above are read back below by other threads of this program
    w = tl.where(rows < R_VALID, 1.0 / l_i, 0.0)
    qb = pid * QBT + tl.arange(0, QBT)
    for t in range(0, NT):
        kb = t * KBT + tl.arange(0, KBT)
        e = tl.load(e_ptr + (n * RQ + rows[:, None]) * KB + kb[None, :],
                    mask=(rows < RQ)[:, None] & (kb < KB)[None, :], other=0.0)
        mt = tl.load(m_ptr + (n * RQ + rows) * NT + t, mask=rows < RQ, other=0.0)
        f = tl.exp2(mt - m_i) * w
        a = tl.sum(tl.reshape(e * f[:, None], [QBT, RB, KBT]), axis=1)  # (QBT, KBT)
        tl.store(a_ptr + (n * QB + qb[:, None]) * KB + kb[None, :], a,
                 mask=(qb < QB)[:, None] & (kb < KB)[None, :])


def block_mass(q: torch.Tensor, k: torch.Tensor, *, stride: int, block: int, padded: int,
               config: AntidiagonalConfig | None = None) -> torch.Tensor:
    """q, k (N, S, D) -> (N, ceil(S / block), padded / block) float32 block masses (see the module docstring).

    ``padded`` >= S is the zero-padded length (a multiple of ``block``) the softmax runs over."""
    if q.dim() != 3 or q.shape != k.shape:
        raise ValueError(f"q {tuple(q.shape)} / k {tuple(k.shape)}; expected one (N, S, D) shape")
    n, s, d = q.shape
    if d < 16 or d & (d - 1):
        raise ValueError(f"head dim D={d}; the antidiagonal kernel expects a power of two >= 16")
    if block % stride or stride & (stride - 1) or block & (block - 1):
        raise ValueError(f"stride={stride}, block={block}; expected powers of two with stride dividing block")
    if padded < s or padded % block:
        raise ValueError(f"padded={padded}; expected a multiple of block={block} that is >= S={s}")
    cfg = config or ANTIDIAGONAL_CONFIGS["h200"]
    q, k = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k))
    rb = block // stride
    bm, bn = max(cfg.block_m, rb), max(cfg.block_n, rb)
    r, qb, kb = padded // stride, math.ceil(s / block), padded // block
    rq, nt = qb * rb, triton.cdiv(r, bn)
    e = torch.empty(n, rq, kb, dtype=torch.float32, device=q.device)
    m = torch.empty(n, rq, nt, dtype=torch.float32, device=q.device)
    out = torch.empty(n, qb, kb, dtype=torch.float32, device=q.device)
    scale = math.log2(math.e) / math.sqrt(d) / stride
    _antidiagonal_mass_kernel[(triton.cdiv(rq, bm), n)](
        q, k, e, m, out, s, r, math.ceil(s / stride), rq, kb, nt, qb, q.stride(0), q.stride(1), k.stride(0),
        k.stride(1), scale, STRIDE=stride, D=d, RB=rb, BM=bm, BN=bn, IEEE=q.dtype == torch.float32,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out
