"""Triton kernels of the sparse stack; each file holds the kernel, its launcher and the public op.

The torch code in svg2/ (kmeans.py, permute.py, attention.py) is the reference and the CPU path;
CUDA tensors are dispatched here.
"""
from svg2.kernels.kmeans import ASSIGN_CONFIGS, AssignConfig, assign_nearest, cluster_means
from svg2.kernels.permute import gather_rows
from svg2.kernels.varblock import VARBLOCK_CONFIGS, VarblockConfig, VarblockPlan, make_plan, varblock_attention

__all__ = ["ASSIGN_CONFIGS", "AssignConfig", "assign_nearest", "cluster_means", "gather_rows",
           "VARBLOCK_CONFIGS", "VarblockConfig", "VarblockPlan", "make_plan", "varblock_attention"]
