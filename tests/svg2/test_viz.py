import matplotlib

matplotlib.use("Agg")
import torch

from svg2.methods import build_method
from svg2.timing import StageTimer
from svg2.viz import plot_block_map, token_mask_permuted


def test_drawn_mask_has_the_block_map_density(tmp_path):
    q, k, v = (torch.randn(1, 1, 90, 16) for _ in range(3))
    m = build_method("svg2", num_q_clusters=6, num_k_clusters=9, top_p=0.6, kmeans_iters_first=3)
    plan = m.plan(q, k, v, m.state.layer(0, 0), None, StageTimer(q.device, enabled=False))
    mask = token_mask_permuted(plan.block_map)
    assert mask.shape == (90, 90)
    assert int(mask.sum()) == int(plan.block_map.kept_pairs())
    fig = plot_block_map(plan.block_map, q_order=plan.q_perm.order[0], k_order=plan.k_perm.order[0])
    fig.savefig(tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 1000
