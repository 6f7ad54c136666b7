"""The method stack's Triton path (k, v permuted; q read and the output written through the query order)
against its torch path, on the CPU through the Triton interpreter."""
import pytest
import torch

import svg2.attention as attention
from svg2.methods import build_method


@pytest.mark.parametrize("name,cfg", [
    ("svg2", dict(num_q_clusters=5, num_k_clusters=12, top_p=0.7, kmeans_iters_first=5)),
    ("positional", dict(block_size=32, top_p=0.7))])
def test_kernel_path_matches_torch_path(monkeypatch, name, cfg):
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 150, 32) for _ in range(3))  # S not a multiple of any tile
    torch_out = build_method(name, **cfg)(q, k, v)
    # The attention op is the one place that chooses the kernel: CPU tensors through the interpreter.
    monkeypatch.setattr(attention, "kernel_covers", lambda t: True)
    method = build_method(name, **cfg)
    kernel_out = method(q, k, v)
    assert 0.05 < method.stats[-1].as_row()["density"] < 0.95
    assert (kernel_out - torch_out).abs().max() < 1e-4
