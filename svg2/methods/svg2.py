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

    def family(self) -> str:
        return f"QC{self.num_q_clusters}/KC{self.num_k_clusters}" + (f" align{self.align_q_tile}"
                                                                     if self.align_q_tile else "")


# Upstream settings (Sparse VideoGen2 release): QC by resolution, KC 1000, top_p 0.9, min_kc_ratio 0.1,
# 50 then 2 k-means iterations, dense warm-up over the first 20-30% of steps and layer 0.
SVG2_PRESETS = {
    "wan_720p": dict(num_q_clusters=300),
    "wan_480p": dict(num_q_clusters=200),
    "hunyuan_720p": dict(num_q_clusters=400),
}
_UPSTREAM = dict(num_k_clusters=1000, top_p=0.9, min_kc_ratio=0.1, kmeans_iters_first=50, kmeans_iters_step=2,
                 dense_steps=0.2, dense_layers=1)


def svg2_preset(name: str, **overrides) -> SVG2Config:
    if name not in SVG2_PRESETS:
        raise ValueError(f"preset={name!r}; expected one of {sorted(SVG2_PRESETS)}")
    return SVG2Config(**{**_UPSTREAM, **SVG2_PRESETS[name], **overrides})


@register_method
class SVG2Method(AttentionMethod):
    name = "svg2"
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

    def check_shape(self, *, tokens, grid, heads, head_dim) -> None:
        check_clusters("num_q_clusters", self.config.num_q_clusters, tokens)
        check_clusters("num_k_clusters", self.config.num_k_clusters, tokens)

    def plan(self, q, k, v, layer_state: LayerState, grid, timer) -> Plan:
        b, h, s, d = q.shape
        n = b * h
        c = self.config
        check_clusters("num_q_clusters", c.num_q_clusters, s)
        check_clusters("num_k_clusters", c.num_k_clusters, s)
        warm = layer_state.calls > 0 and _fits(layer_state.q_centroids, n, c.num_q_clusters, d)
        iters = c.kmeans_iters_step if warm else c.kmeans_iters_first
        with timer.stage("cluster"):
            qk = kmeans(q.reshape(n, s, d), c.num_q_clusters, iters, init=c.kmeans_init, seed=c.seed,
                        centroids=layer_state.q_centroids if warm else None)
            kk = kmeans(k.reshape(n, s, d), c.num_k_clusters, iters, init=c.kmeans_init, seed=c.seed + 1,
                        centroids=layer_state.k_centroids if warm else None)
            q_labels = qk.labels
            if c.align_q_tile > 1:
                # Only the layout changes: the centroids (selection, next call's warm start) stay k-means'.
                q_labels = align_cluster_sizes(q.reshape(n, s, d), qk.labels, qk.centroids, c.align_q_tile)
        layer_state.q_centroids, layer_state.k_centroids = qk.centroids, kk.centroids
        layer_state.calls += 1
        with timer.stage("select"):
            mass = cluster_mass(centroid_scores(qk.centroids, kk.centroids), kk.sizes)
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
        return Plan(block_map, q_perm=q_perm, k_perm=k_perm, kmeans_iters=iters)


def _fits(centroids, n: int, k: int, d: int) -> bool:
    return centroids is not None and tuple(centroids.shape) == (n, k, d)
