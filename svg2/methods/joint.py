"""Self-attention over video tokens plus conditioning tokens that stay dense.

HunyuanVideo appends its prompt tokens to the video tokens and CogVideoX prepends them; both run one
joint self-attention. Only the video tokens are planned by the method (clustered, permuted, blocks
selected). The plan is then extended by one query cluster holding every conditioning token and two key
clusters, valid conditioning tokens (kept for every query) and padding (kept for none), so the whole call
still runs as one variable-block sparse attention. That reproduces the stock key-padding mask exactly:
nobody attends padding, prompt tokens attend everything valid and are attended by every query.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from svg2.attention import dense_attention
from svg2.blocks import BlockMap
from svg2.checks import is_capturing
from svg2.permute import Permutation, permutation_from_order
from svg2.plan import Plan


def check_joint(video: slice | None, key_mask: torch.Tensor | None, b: int, s: int) -> slice:
    """The video token range (default: every token), checked against (B, S)."""
    video = slice(0, s) if video is None else video
    if video.step not in (None, 1) or video.start is None or video.stop is None or not 0 <= video.start < video.stop <= s:
        raise ValueError(f"video tokens [{video.start}, {video.stop}) do not fit in S={s}; expected a contiguous range")
    if key_mask is not None:
        if tuple(key_mask.shape) != (b, s) or key_mask.dtype != torch.bool:
            raise ValueError(f"key_mask has shape {tuple(key_mask.shape)} and dtype {key_mask.dtype}; "
                             f"expected (B, S)={(b, s)} bool")
        if not is_capturing(key_mask) and not bool(key_mask[:, video].all()):
            raise ValueError("key_mask marks video tokens as padding; only conditioning tokens may be padding")
    return video


def masked_dense_attention(q, k, v, key_mask: torch.Tensor | None, backend: str) -> torch.Tensor:
    """Dense attention with a (B, S) key-padding mask; without padding it takes the fastest SDPA backend."""
    if key_mask is None or (not is_capturing(q) and bool(key_mask.all())):
        return dense_attention(q, k, v, backend)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])


def extend_plan(plan: Plan, b: int, h: int, s: int, video: slice, key_mask: torch.Tensor | None):
    """A plan over the S_v video tokens -> a plan over all S tokens (see the module docstring)."""
    n, device = b * h, plan.block_map.keep.device
    start, stop = video.start, video.stop
    sv = stop - start
    other = torch.cat([torch.arange(0, start, device=device), torch.arange(stop, s, device=device)])  # (S_t,)
    st = other.numel()

    def video_order(perm: Permutation | None) -> torch.Tensor:
        order = perm.order if perm is not None else torch.arange(sv, device=device).expand(n, sv)
        return order + start

    # Queries: video in the method's order, then every conditioning token.
    q_order = torch.cat([video_order(plan.q_perm), other.expand(n, st)], dim=1)
    # Keys: video in the method's order, then valid conditioning tokens, then padding.
    if key_mask is None:
        valid = torch.full((b,), st, dtype=torch.long, device=device)
        text_keys = other.expand(n, st)
    else:
        text_valid = key_mask[:, other]  # (B, S_t)
        valid = text_valid.sum(-1)
        text_rank = torch.sort((~text_valid).to(torch.int8), dim=1, stable=True).indices
        text_keys = other[text_rank].repeat_interleave(h, dim=0)
    k_order = torch.cat([video_order(plan.k_perm), text_keys], dim=1)

    bm = plan.block_map
    qc, kc = bm.keep.shape[-2:]
    keep = torch.zeros(b, h, qc + 1, kc + 2, dtype=torch.bool, device=device)
    keep[:, :, :qc, :kc] = bm.keep
    keep[:, :, :, kc] = True          # everyone attends the valid conditioning tokens
    keep[:, :, qc, :kc] = True        # conditioning tokens attend every video token
    valid = valid[:, None, None].expand(b, h, 1)
    row_sizes = torch.cat([bm.row_sizes, torch.full((b, h, 1), st, dtype=torch.long, device=device)], dim=-1)
    col_sizes = torch.cat([bm.col_sizes, valid, st - valid], dim=-1)
    return Plan(BlockMap(keep, row_sizes, col_sizes), q_perm=permutation_from_order(q_order, row_sizes),
                k_perm=permutation_from_order(k_order, col_sizes), kmeans_iters=plan.kmeans_iters)
