"""SVG2: k-means semantic-aware permutation of queries and keys, centroid-estimated block importance
with a top-p budget, and variable-block sparse attention (arXiv 2505.18875)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from svg2.align import align_cluster_sizes
from svg2.blocks import BlockMap, centroid_scores, cluster_mass, key_cluster_layout, select_by_mass
from svg2.checks import check_clusters, check_int
from svg2.kmeans import kmeans
from svg2.methods.base import AttentionMethod, LayerState
from svg2.methods.registry import register_method
from svg2.methods.selection import BudgetConfig
from svg2.permute import permutation_from_labels
from svg2.plan import Plan


@dataclass
class SVG2Config(BudgetConfig):
    num_q_clusters: int = 200     # QC
    num_k_clusters: int = 1000    # KC
    kmeans_iters_first: int = 50  # first call of a (layer, branch): from a seeded init
    kmeans_iters_step: int = 2    # later calls: warm-started from the cached centroids
    kmeans_init: str = "random"   # or "kmeans++"
    seed: int = 0
    align_q_tile: int = 0         # > 0: move a few boundary queries so query cluster sizes become multiples of
    #                               this (64 = the Triton kernel's query tile); 0 = plain k-means labels (upstream)
    zero_step_kmeans: bool = False  # also cluster during the dense warm-up steps (50 iterations at the first
    #                                 call, then kmeans_iters_step a call), so the first sparse step starts warm;
    #                                 the reference's Hunyuan and Wan I2V 480p scripts do
    share_cfg_state: bool = False  # one centroid cache per layer shared by the CFG branches (the reference's Wan
    #                                integration); default: one per (layer, branch)
    centroid_dtype: str = "float32"  # 'input': centroids rounded to the inputs' dtype after every update and the
    #                                  centroid scores taken in it (the reference, bf16 on real models)
    upstream: bool = False        # every reference rule at once: dense_rounding 'floor', share_cfg_state,
    #                               centroid_dtype 'input' (set on these fields when the config is built)

    def family(self) -> str:
        return f"QC{self.num_q_clusters}/KC{self.num_k_clusters}" + (f" align{self.align_q_tile}"
                                                                     if self.align_q_tile else "")


# Rules of the reference implementation kept out of ``upstream``, on purpose: at top_p = 1 it drops tiny key
# clusters through rounding in its cumulative sum (here top_p = 1 keeps every non-empty cluster), and on Hunyuan it
# gives padding text tokens rows of their own (here padding is never attended and its queries follow the text).
UPSTREAM_RULES = dict(dense_rounding="floor", share_cfg_state=True, centroid_dtype="input")

# Upstream settings (Sparse VideoGen2 release): QC by resolution, KC 1000, top_p 0.9, min_kc_ratio 0.1,
# 50 then 2 k-means iterations, dense warm-up over the first 20-30% of steps and layer 0.
SVG2_PRESETS = {  # keyed by the shape names of eval.shapes
    "wan_t2v_14b_720p": dict(num_q_clusters=300),
    "wan_i2v_14b_720p": dict(num_q_clusters=300),
    "wan_t2v_1.3b_480p": dict(num_q_clusters=200),
    "hunyuan_720p": dict(num_q_clusters=400),
}
_UPSTREAM = dict(num_k_clusters=1000, top_p=0.9, min_kc_ratio=0.1, kmeans_iters_first=50, kmeans_iters_step=2,
                 dense_steps=0.2, dense_layers=1)


def svg2_preset(name: str, **overrides) -> SVG2Config:
    if name not in SVG2_PRESETS:
        raise ValueError(f"preset={name!r}; expected one of {sorted(SVG2_PRESETS)}")
    return SVG2Config(**{**SVG2Method.presets[name], **overrides})


@register_method
class SVG2Method(AttentionMethod):
    name = "svg2"
    presets = {shape: {**_UPSTREAM, **values} for shape, values in SVG2_PRESETS.items()}
    Config = SVG2Config
    order = 20

    def validate_config(self) -> None:
        super().validate_config()
        c = self.config
        c.check_budget()
        check_int("num_q_clusters", c.num_q_clusters, minimum=1)
        check_int("num_k_clusters", c.num_k_clusters, minimum=1)
        check_int("kmeans_iters_first", c.kmeans_iters_first)
        check_int("kmeans_iters_step", c.kmeans_iters_step)
        check_int("align_q_tile", c.align_q_tile, hint="0 = off, 64 = the kernel's query tile")
        if c.kmeans_init not in ("random", "kmeans++"):
            raise ValueError(f"kmeans_init={c.kmeans_init!r}; expected 'random' or 'kmeans++'")
        if c.centroid_dtype not in ("float32", "input"):
            raise ValueError(f"centroid_dtype={c.centroid_dtype!r}; expected 'float32' or 'input'")
        if c.upstream:
            for field, value in UPSTREAM_RULES.items():
                setattr(c, field, value)

    def state_key(self, layer: int, branch: int) -> tuple[int, int]:
        return (layer, 0) if self.config.share_cfg_state else (layer, branch)

    def observe_dense(self, q, k, v, layer, layer_state, timer) -> int:
        if not self.config.zero_step_kmeans or layer < self.config.dense_layers:
            return 0  # (layers that stay dense never need centroids)
        return self._cluster(q, k, layer_state, timer)[-1]

    def _cluster(self, q, k, layer_state: LayerState, timer):
        """k-means of queries and keys, warm-started from the layer's cache when it fits; updates the cache."""
        b, h, s, d = q.shape
        n, c = b * h, self.config
        warm = layer_state.calls > 0 and _fits(layer_state.q_centroids, n, c.num_q_clusters, d)
        iters = c.kmeans_iters_step if warm else c.kmeans_iters_first
        dtype = q.dtype if c.centroid_dtype == "input" else None
        rows = None if warm else _batch_rows(b, h, layer_state.heads, q.device)
        with timer.stage("cluster"):
            qk = kmeans(q.reshape(n, s, d), c.num_q_clusters, iters, init=c.kmeans_init, seed=c.seed,
                        centroids=layer_state.q_centroids if warm else None, centroid_dtype=dtype, rows=rows)
            kk = kmeans(k.reshape(n, s, d), c.num_k_clusters, iters, init=c.kmeans_init, seed=c.seed + 1,
                        centroids=layer_state.k_centroids if warm else None, centroid_dtype=dtype, rows=rows)
        layer_state.q_centroids, layer_state.k_centroids = qk.centroids, kk.centroids
        layer_state.calls += 1
        return qk, kk, iters

    def check_shape(self, *, tokens, grid, heads, head_dim) -> None:
        check_clusters("num_q_clusters", self.config.num_q_clusters, tokens)
        check_clusters("num_k_clusters", self.config.num_k_clusters, tokens)

    def plan(self, q, k, v, layer_state: LayerState, grid, timer) -> Plan:
        b, h, s, d = q.shape
        n = b * h
        c = self.config
        qk, kk, iters = self._cluster(q, k, layer_state, timer)
        q_labels = qk.labels
        if c.align_q_tile > 1:
            with timer.stage("cluster"):
                # Only the layout changes: the centroids (selection, next call's warm start) stay k-means'.
                q_labels = align_cluster_sizes(q.reshape(n, s, d), qk.labels, qk.centroids, c.align_q_tile)
        with timer.stage("select"):
            dtype = q.dtype if c.centroid_dtype == "input" else torch.float32
            mass = cluster_mass(centroid_scores(qk.centroids, kk.centroids, dtype), kk.sizes)
            keep = select_by_mass(mass, kk.sizes, **c.budget())
            # Key clusters are laid out in this order (not by label), so the ones a query cluster keeps
            # tend to be adjacent: the kernel reads them as fewer, longer runs. Same attention either way.
            layout = key_cluster_layout(mass)                 # (N, KC) layout position -> key cluster
            keep = keep.gather(-1, layout[:, None, :].expand_as(keep))
            col_sizes = kk.sizes.gather(-1, layout)
            position = torch.empty_like(layout).scatter_(-1, layout, torch.arange(
                layout.shape[-1], device=layout.device).expand_as(layout))  # key cluster -> layout position
        with timer.stage("permute"):
            q_perm = permutation_from_labels(q_labels, c.num_q_clusters)
            k_perm = permutation_from_labels(position.gather(-1, kk.labels), c.num_k_clusters)
        block_map = BlockMap(keep.reshape(b, h, c.num_q_clusters, c.num_k_clusters),
                             q_perm.sizes.reshape(b, h, -1), col_sizes.reshape(b, h, -1))
        # the mass in layout order is for measurements (plan_quality) only: an (N, QC, KC) copy per call otherwise
        mass = mass.gather(-1, layout[:, None, :].expand_as(mass)) if self.record_plans else None
        return Plan(block_map, q_perm=q_perm, k_perm=k_perm, kmeans_iters=iters, mass=mass)


def _batch_rows(b: int, h: int, heads: tuple[int, int] | None, device) -> tuple[torch.Tensor, int] | None:
    """The (B*H) k-means rows of a call holding heads first..first+H of ``total``, as rows of the whole call's
    (B*total) batch (``kmeans(rows=...)``); None for a call holding every head."""
    if heads is None:
        return None
    first, total = heads
    index = torch.arange(b, device=device)[:, None] * total + first + torch.arange(h, device=device)
    return index.reshape(-1), b * total


def _fits(centroids, n: int, k: int, d: int) -> bool:
    return centroids is not None and tuple(centroids.shape) == (n, k, d)
