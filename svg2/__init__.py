"""svg2: Sparse VideoGen2 and baselines behind one sparse-attention stack."""
from svg2.attention import block_sparse_attention, dense_attention
from svg2.blocks import BlockMap, centroid_scores, select_blocks
from svg2.kmeans import KMeansResult, kmeans
from svg2.methods import METHODS, build_method
from svg2.plan import Plan, execute_plan
from svg2.permute import Permutation, permutation_from_labels, permute, unpermute

__all__ = ["BlockMap", "KMeansResult", "METHODS", "Permutation", "Plan", "block_sparse_attention", "build_method",
           "centroid_scores", "dense_attention", "execute_plan", "kmeans", "permutation_from_labels", "permute", "select_blocks",
           "unpermute"]
