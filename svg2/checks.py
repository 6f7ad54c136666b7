"""Input checks shared by every public op: errors name the bad value and what was expected."""
from __future__ import annotations

import torch


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """q, k, v must be (B, H, S, D) tensors of one shape, dtype and device."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} is a {type(t).__name__}; expected a torch.Tensor of shape (B, H, S, D)")
        if t.dim() != 4:
            raise ValueError(f"{name} has {t.dim()} dims (shape {tuple(t.shape)}); expected (B, H, S, D)")
        if not (t.is_floating_point()):
            raise TypeError(f"{name} has dtype {t.dtype}; expected a floating-point dtype")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(
            f"q, k, v shapes differ: {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}; "
            "expected one (B, H, S, D) shape for self-attention"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}; expected one dtype")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v devices differ: {q.device}, {k.device}, {v.device}; expected one device")
    if q.shape[2] == 0 or q.shape[3] == 0:
        raise ValueError(f"q has shape {tuple(q.shape)}; expected S >= 1 and D >= 1")


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise on NaN/inf. Synchronises with the device, so callers skip it on the CUDA graph path."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} has {bad} non-finite values (NaN or inf); clustering needs finite inputs")


def check_int(name: str, value, *, minimum: int = 0, maximum: int | None = None, hint: str = "") -> int:
    """An integer (not a bool) in [minimum, maximum]; returns it. ``hint`` says what the value means."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and
                                                                                     value > maximum):
        expected = (f"an integer in [{minimum}, {maximum}]" if maximum is not None
                    else "a positive integer" if minimum == 1 else f"an integer >= {minimum}")
        raise ValueError(f"{name}={value!r}; expected {expected}" + (f" ({hint})" if hint else ""))
    return value


def check_triple(name: str, value, what: str = "(t, h, w)") -> tuple[int, int, int]:
    """Three positive ints (lists from YAML become tuples)."""
    try:
        triple = tuple(value)
        if len(triple) != 3:
            raise ValueError
        for x in triple:
            check_int(name, x, minimum=1)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}; expected three positive integers {what}") from None
    return triple


def check_clusters(name: str, num_clusters: int, seq_len: int) -> None:
    check_int(name, num_clusters, minimum=1)
    if num_clusters > seq_len:
        raise ValueError(f"{name}={num_clusters} exceeds the sequence length S={seq_len}; expected {name} <= S")


def check_fraction(name: str, value: float, *, allow_zero: bool = False) -> None:
    """top_p must lie in (0, 1]; ratios such as min_kc_ratio in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r} is a {type(value).__name__}; expected a number")
    ok = (0.0 <= value <= 1.0) if allow_zero else (0.0 < value <= 1.0)
    if not ok:
        rng = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name}={value!r} is outside {rng}")


def is_capturing(x: torch.Tensor) -> bool:
    """True while a CUDA graph is being captured on the current stream (host syncs are illegal then)."""
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def kernel_covers(x: torch.Tensor) -> bool:
    """CUDA tensors the Triton kernels in svg2/kernels handle (fp16/bf16/fp32, head dim a power of two >= 16,
    unit stride on the last dim); everything else takes the torch path."""
    d = x.shape[-1]
    return (x.is_cuda and x.dtype in (torch.float16, torch.bfloat16, torch.float32) and d >= 16
            and d & (d - 1) == 0 and x.stride(-1) == 1)
