"""Attention-level error of a sparse output against the dense output of the same call."""
from __future__ import annotations

import torch


def _check(ref: torch.Tensor, out: torch.Tensor) -> None:
    if ref.shape != out.shape:
        raise ValueError(f"ref {tuple(ref.shape)} and out {tuple(out.shape)} differ; expected one (B, H, S, D)")


def relative_l2(ref: torch.Tensor, out: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| over the whole tensor, in float64."""
    _check(ref, out)
    r, o = ref.double(), out.double()
    return float(torch.linalg.vector_norm(o - r) / torch.linalg.vector_norm(r).clamp_min(1e-30))


def cosine_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """1 - cosine similarity of each token's output vector (last dim), averaged over tokens."""
    _check(ref, out)
    cos = torch.nn.functional.cosine_similarity(ref.double(), out.double(), dim=-1, eps=1e-30)
    return float(1 - cos.mean())


def cluster_ids(perm, sizes: torch.Tensor, s: int) -> torch.Tensor:
    """(N, S) cluster of every token in the original order, from a permutation (None = identity) and its run
    lengths (N, K): permuted position p lies in run searchsorted(cumsum(sizes), p, right)."""
    n = sizes.shape[0]
    run = torch.searchsorted(sizes.cumsum(-1), torch.arange(s, device=sizes.device).expand(n, s).contiguous(),
                             right=True)
    return run if perm is None else run.gather(1, perm.inverse)


@torch.no_grad()
def plan_quality(q: torch.Tensor, k: torch.Tensor, plan, chunk_rows: int = 512) -> dict:
    """The paper's two causes of a sparse method's error, for one call (video tokens only), per (B·H) head:

    - ``recall``: true softmax mass inside the kept blocks, mean over queries (identification);
    - ``mass_err``: over the kept blocks, mean |estimated - true| mass of the block for its query cluster, where the
      method estimates one (``plan.mass``; NaN otherwise; estimation);
    - ``waste``: query-key pairs the kernel's tiles cover over the pairs kept (computation; the Triton kernel's
      default tiles, ``svg2.kernels.varblock.tile_work``).

    Dense scores are formed ``chunk_rows`` queries at a time, never S x S. Returns (N,) float64 tensors.
    """
    from svg2.kernels.varblock import default_config, tile_work

    b, h, s, d = q.shape
    n = b * h
    bm = plan.block_map
    keep = bm.keep.reshape(n, *bm.keep.shape[-2:])
    qc, kc = keep.shape[-2:]
    rows, cols = bm.row_sizes.reshape(n, qc), bm.col_sizes.reshape(n, kc)
    q_id, k_id = cluster_ids(plan.q_perm, rows, s), cluster_ids(plan.k_perm, cols, s)  # (N, S) each
    qf, kf = q.reshape(n, s, d).float(), k.reshape(n, s, d).float()
    kept_mass = torch.zeros(n, dtype=torch.float64, device=q.device)
    block = torch.zeros(n, qc, kc, dtype=torch.float64, device=q.device)  # true mass summed over each cluster's rows
    for r0 in range(0, s, chunk_rows):
        probs = torch.softmax(qf[:, r0:r0 + chunk_rows] @ kf.transpose(1, 2) / d ** 0.5, -1).double()  # (N, R, S)
        by_cluster = torch.zeros(n, probs.shape[1], kc, dtype=torch.float64, device=q.device)
        by_cluster.scatter_add_(2, k_id[:, None, :].expand_as(probs), probs)  # (N, R, KC)
        ids = q_id[:, r0:r0 + chunk_rows]
        kept_mass += (by_cluster * keep.gather(1, ids[..., None].expand(-1, -1, kc))).sum((1, 2))
        block.scatter_add_(1, ids[..., None].expand_as(by_cluster), by_cluster)
    true = block / rows.clamp_min(1)[..., None].double()
    if getattr(plan, "mass", None) is not None:
        err = (plan.mass.reshape(n, qc, kc).double() - true).abs()
        mass_err = (err * keep).sum((1, 2)) / keep.sum((1, 2)).clamp_min(1)
    else:
        mass_err = torch.full((n,), float("nan"), dtype=torch.float64, device=q.device)
    kept = bm.kept_pairs().reshape(n).double()
    waste = tile_work(keep, rows, cols, default_config()).reshape(n) / kept.clamp_min(1)
    return dict(recall=kept_mass / s, mass_err=mass_err, waste=waste)
