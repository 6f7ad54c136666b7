"""Checks every block-scoring baseline's tests share: its plan against a token mask built from the authors'
rule, the joint video + prompt path, and one call captured in a CUDA graph."""
import copy
import math

import torch
import torch.nn.functional as F

from svg2.reference import masked_attention, token_mask
from tests.svg2.test_attention import plan_of


def plan_token_mask(method, q, k, v, grid):
    """The plan of one call and its (B, H, S, S) token mask in the original token order."""
    plan, ql, kl = plan_of(method, q, k, v, grid)
    return plan, token_mask(plan.block_map.keep, ql, kl)


def assert_plan_matches(method, q, k, v, grid, want: torch.Tensor) -> torch.Tensor:
    """The method's plan keeps exactly the token pairs of ``want`` (B, H, S, S), its realised density is that
    mask's, its row/column sizes cover S, and a call of the method equals masked attention with that mask."""
    b, h, s, _ = q.shape
    plan, got = plan_token_mask(method, q, k, v, grid)
    assert got.shape == want.shape
    diff = (got != want).double().mean().item()
    assert diff == 0.0, f"{diff:.2%} of token pairs differ from the reference mask"
    bm = plan.block_map
    assert bm.row_sizes.sum(-1).eq(s).all() and bm.col_sizes.sum(-1).eq(s).all()
    torch.testing.assert_close(bm.density(), want.double().mean((-1, -2)), rtol=0, atol=1e-12)
    method.reset()
    out = method(q, k, v, grid=grid)
    ref = masked_attention(q, k, v, want)
    torch.testing.assert_close(out, ref.to(out.dtype), atol=1e-5, rtol=1e-5)
    assert abs(method.stats[-1].as_row()["density"] - want.double().mean().item()) < 1e-12
    return bm.density()


def joint_inputs(seed: int, prepend: bool, b=2, h=2, grid=(3, 4, 8), text=8, d=16):
    """Video tokens of ``grid`` plus ``text`` prompt tokens (the last ones of each batch row padding)."""
    sv = math.prod(grid)
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, sv + text, d, generator=g) for _ in range(3))
    video = slice(text, text + sv) if prepend else slice(0, sv)
    prompt = torch.arange(sv + text)[:text] if prepend else torch.arange(sv + text)[sv:]
    key_mask = torch.ones(b, sv + text, dtype=torch.bool)
    key_mask[0, prompt[5:]] = False
    key_mask[1, prompt[7:]] = False
    return q, k, v, video, prompt, key_mask


def assert_joint(make_method, sparse_cfg: dict, dense_cfg: dict, grid=(3, 4, 8)):
    """Joint video + prompt attention (prompt appended as in HunyuanVideo, prepended as in CogVideoX):
    at full budget the call equals SDPA with the key-padding mask; at a sparse budget prompt queries still equal
    it, video queries are sparse (their video keys exactly the method's own plan on the video tokens, plus
    every valid prompt key), and padding keys are never attended."""
    for prepend in (False, True):
        q, k, v, video, prompt, key_mask = joint_inputs(0, prepend, grid=grid)
        stock = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        full = make_method(**dense_cfg)(q, k, v, video=video, key_mask=key_mask, grid=grid)
        torch.testing.assert_close(full, stock, atol=1e-5, rtol=1e-5)

        method = make_method(**sparse_cfg)
        out = method(q, k, v, video=video, key_mask=key_mask, grid=grid)
        torch.testing.assert_close(out[:, :, prompt], stock[:, :, prompt], atol=1e-5, rtol=1e-5)
        assert 0 < method.stats[-1].as_row()["density"] < 1
        # Video queries: the method's mask over video keys, every valid prompt key, no padding.
        _, video_mask = plan_token_mask(make_method(**sparse_cfg), *(t[:, :, video] for t in (q, k, v)), grid)
        mask = key_mask[:, None, None, :].expand(q.shape[0], q.shape[1], q.shape[2], q.shape[2]).clone()
        mask[:, :, video, video] = video_mask
        want = masked_attention(q, k, v, mask)
        torch.testing.assert_close(out[:, :, video], want[:, :, video], atol=1e-5, rtol=1e-5)
        assert (out[:, :, video] - stock[:, :, video]).abs().max() > 1e-3


def assert_cuda_graph_replays_eager(method, grid=(21, 30, 52), heads=4, d=128, qkv=None, **call):
    """One call (Wan 1.3B 480p tokens; random bf16 q, k, v unless ``qkv`` is given) captured in a CUDA graph
    replays equal to the eager call made from the same method state (a method that cycles per-call state, like
    SVG1's sampled rows, gets the captured call's state back for the eager one)."""
    if qkv is None:
        torch.manual_seed(0)
        s = math.prod(grid)
        qkv = [torch.randn(1, heads, s, d, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    q, k, v = qkv
    method(q, k, v, grid=grid, **call)  # warm call: Triton compilation, static caches
    state = copy.deepcopy(method.state)
    graph = torch.cuda.CUDAGraph()
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):  # raises if anything on the path synchronises with the host
        out = method(q, k, v, grid=grid, **call)
    graph.replay()
    torch.cuda.synchronize()
    method.state = state
    eager = method(q, k, v, grid=grid, **call)
    assert torch.isfinite(out).all()
    assert (out.float() - eager.float()).abs().max() < 1e-2
