"""Pictures of what the stack does, at toy size: the block map in cluster order (kept blocks drawn at their
token extents, so variable cluster sizes are visible) and the same mask back in the original token order."""
from __future__ import annotations

import torch

from svg2.blocks import BlockMap


def token_mask_permuted(block_map: BlockMap, b: int = 0, h: int = 0) -> torch.Tensor:
    """(S, S) bool token mask of one head in cluster order. For drawing small S only."""
    keep = block_map.keep[b, h]
    rows = keep.repeat_interleave(block_map.row_sizes[b, h], dim=0)
    return rows.repeat_interleave(block_map.col_sizes[b, h], dim=1)


def plot_block_map(block_map: BlockMap, b: int = 0, h: int = 0, q_order=None, k_order=None, ax=None):
    """Draw one head's mask in cluster order, and in the original order when the permutations are given
    (``q_order``/``k_order``: (S,) original index at each permuted position). Returns the figure."""
    import matplotlib.pyplot as plt

    mask = token_mask_permuted(block_map, b, h)
    panels = [("cluster order", mask)]
    if q_order is not None and k_order is not None:
        original = torch.zeros_like(mask)
        original[q_order[:, None], k_order[None, :]] = mask
        panels.append(("original token order", original))
    if ax is None:
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
        axes = axes[0]
    else:
        axes, fig = [ax], ax.figure
    for a, (title, m) in zip(axes, panels):
        a.imshow(m.cpu().numpy(), cmap="Greys", interpolation="nearest")
        a.set_title(f"{title}, density {m.float().mean():.2f}")
        a.set_xlabel("key token")
        a.set_ylabel("query token")
    if len(panels) and ax is None:
        bounds_q = torch.cumsum(block_map.row_sizes[b, h], 0)[:-1].tolist()
        bounds_k = torch.cumsum(block_map.col_sizes[b, h], 0)[:-1].tolist()
        for y in bounds_q:
            axes[0].axhline(y - 0.5, color="tab:blue", lw=0.3)
        for x in bounds_k:
            axes[0].axvline(x - 0.5, color="tab:orange", lw=0.3)
    fig.tight_layout()
    return fig
