"""Ulysses sequence parallelism for one attention call, on ``torch.distributed`` (NCCL on GPUs, gloo on CPUs).

Each of P ranks holds the q/k/v of a slice of the video tokens, for all H heads. One all-to-all turns that into
every video token for H/P heads; the method runs on those heads exactly as in one process (k-means, block
selection and the kernel need nothing from other ranks; its state stays keyed by (layer, branch) on each rank);
a second all-to-all turns the output back into this rank's tokens for all heads. Conditioning tokens of joint
attention (Hunyuan's appended prompt, CogVideoX's prepended one) are held whole by every rank: on the way in each
rank takes its heads of them, on the way out one all-gather over heads gives every rank their whole output.

Tokens split as ``torch.tensor_split`` splits them (the first S mod P ranks hold one more), so any token count
works; the head count must be a multiple of P. Every rank must make the same calls in the same order (collectives
pair up by order): ``same_on_all_ranks`` checks what must agree before the first one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from svg2.checks import check_qkv
from svg2.methods.joint import check_joint

PARALLEL = ("ulysses",)  # the sequence-parallel schemes ``svg2.diffusers.apply(parallel=...)`` accepts
LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # what a launcher (torchrun) sets in each rank


def _dist():
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; sequence parallelism needs it")
    return dist


def launched() -> bool:
    """True in a rank a launcher (torchrun, or ``eval.ranks.spawn``) started: its environment is set."""
    return all(k in os.environ for k in LAUNCHER_ENV)


def init_ranks(device: str, world_size: int | None = None) -> "Ulysses":
    """Join the default process group from the launcher's environment (torchrun: RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT), with NCCL for a CUDA device and gloo for the CPU; ``world_size``, when given, must match the
    launcher's. Returns the Ulysses layout over it."""
    dist = _dist()
    cuda = torch.device(device).type == "cuda"
    backend, available = ("nccl", dist.is_nccl_available()) if cuda else ("gloo", dist.is_gloo_available())
    if not available:
        raise RuntimeError(f"device={device!r} needs the {backend} backend of torch.distributed, which this torch "
                           "build lacks")
    if not dist.is_initialized():
        missing = [k for k in LAUNCHER_ENV if k not in os.environ]
        if missing:
            raise RuntimeError(f"no process group and no launcher environment ({', '.join(missing)} unset); "
                               "launch with torchrun --nproc-per-node=P or call torch.distributed.init_process_group")
        dist.init_process_group(backend)
    elif dist.get_backend() != backend:
        raise RuntimeError(f"the process group runs {dist.get_backend()}; device={device!r} needs {backend}")
    ulysses = Ulysses.over()
    if world_size is not None and ulysses.world_size != world_size:
        raise ValueError(f"parallel.world_size={world_size} but the launcher started {ulysses.world_size} ranks; "
                         "expected them to match")
    return ulysses


def split_sizes(tokens: int, world_size: int) -> list[int]:
    """Tokens held by each rank: ``torch.tensor_split``'s sizes (the first ``tokens % P`` ranks one more)."""
    if tokens < world_size:
        raise ValueError(f"{tokens} tokens do not split over {world_size} ranks; expected at least one per rank")
    base, extra = divmod(tokens, world_size)
    return [base + (r < extra) for r in range(world_size)]


@dataclass(frozen=True)
class Ulysses:
    """This rank's place in a sequence-parallel group, and the exchanges of one attention call."""

    rank: int
    world_size: int
    group: Any = None                # a torch.distributed process group; None = the default one

    @classmethod
    def over(cls, group=None) -> "Ulysses":
        dist = _dist()
        if not dist.is_initialized():
            raise RuntimeError("parallel='ulysses' needs torch.distributed initialised: launch with torchrun "
                               "(svg2.parallel.init_ranks) or call torch.distributed.init_process_group first")
        return cls(dist.get_rank(group), dist.get_world_size(group), group)

    def share(self, tokens: int) -> slice:
        """This rank's tokens of a sequence of ``tokens``."""
        sizes = split_sizes(tokens, self.world_size)
        start = sum(sizes[:self.rank])
        return slice(start, start + sizes[self.rank])

    def check_heads(self, heads: int) -> None:
        if heads % self.world_size:
            raise ValueError(f"{heads} attention heads do not split over {self.world_size} ranks; Ulysses needs a "
                             f"head count divisible by the world size (world sizes {_divisors(heads)} fit)")

    def same_on_all_ranks(self, what: str, values: dict) -> None:
        """Raise on every rank, naming each rank's value of every key that differs, when ranks disagree on
        ``values`` (picklable: what they are about to run): mismatched ranks would pair up wrong collectives."""
        every = self.gather_objects(values)
        keys = dict.fromkeys(key for v in every for key in v)
        differ = [key for key in keys if any(v.get(key) != every[0].get(key) for v in every)]
        if differ:
            listing = "; ".join(f"{key}: " + ", ".join(f"rank {r} {v.get(key)!r}" for r, v in enumerate(every))
                                for key in differ)
            raise ValueError(f"ranks disagree on {what} ({listing}); expected every rank to run the same")

    def gather_objects(self, value) -> list:
        """Every rank's ``value`` (picklable), in rank order."""
        every = [None] * self.world_size
        _dist().all_gather_object(every, value, group=self.group)
        return every

    # --- the exchanges -------------------------------------------------------------------------------------------
    def to_heads(self, x: torch.Tensor, tokens: int) -> torch.Tensor:
        """(B, H, s_r, D) this rank's tokens, all heads -> (B, H/P, S, D) all ``tokens`` tokens, this rank's heads."""
        b, h, s_r, d = x.shape
        p, hp = self.world_size, h // self.world_size
        sizes = split_sizes(tokens, p)
        send = x.reshape(b, p, hp, s_r, d).permute(1, 3, 0, 2, 4).reshape(p * s_r, b, hp, d)  # rows for rank j: j-th
        recv = x.new_empty(tokens, b, hp, d)
        _dist().all_to_all_single(recv, send.contiguous(), output_split_sizes=sizes, input_split_sizes=[s_r] * p,
                                  group=self.group)
        return recv.permute(1, 2, 0, 3)

    def to_tokens(self, y: torch.Tensor, tokens: int) -> torch.Tensor:
        """The inverse of ``to_heads``: (B, H/P, S, D) -> (B, H, s_r, D)."""
        b, hp, s, d = y.shape
        p = self.world_size
        sizes = split_sizes(tokens, p)
        s_r = sizes[self.rank]
        recv = y.new_empty(p * s_r, b, hp, d)
        _dist().all_to_all_single(recv, y.permute(2, 0, 1, 3).contiguous(), output_split_sizes=[s_r] * p,
                                  input_split_sizes=sizes, group=self.group)
        return recv.reshape(p, s_r, b, hp, d).permute(2, 0, 3, 1, 4).reshape(b, p * hp, s_r, d)

    def gather(self, x: torch.Tensor, dim: int, sizes: list[int] | None = None) -> torch.Tensor:
        """Every rank's ``x`` concatenated along ``dim`` in rank order; ``sizes``: each rank's length there (ranks
        may differ by one token; the shorter ones are padded for the all-gather)."""
        sizes = sizes or [x.shape[dim]] * self.world_size
        if x.shape[dim] != sizes[self.rank]:
            raise ValueError(f"rank {self.rank} holds {x.shape[dim]} tokens along dim {dim}; expected {sizes[self.rank]}")
        longest = max(sizes)
        if x.shape[dim] < longest:
            pad = list(x.shape)
            pad[dim] = longest - x.shape[dim]
            x = torch.cat([x, x.new_zeros(pad)], dim)
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        _dist().all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat([t.narrow(dim, 0, n) for t, n in zip(parts, sizes)], dim)

    def attention(self, method, q, k, v, *, tokens: int, video: slice | None = None,
                  key_mask: torch.Tensor | None = None, **call) -> torch.Tensor:
        """``method`` over the whole sequence, from this rank's part of it: q/k/v (B, H, S_local, D) hold this rank's
        share of the ``tokens`` video tokens at ``video`` (default: all of S_local) and, around them, conditioning
        tokens every rank holds whole; ``key_mask`` (B, S_local) marks their padding. Returns (B, H, S_local, D).
        ``call``: the method's other arguments (layer, branch, grid), as in one process."""
        check_qkv(q, k, v)
        b, h, s, _ = q.shape
        self.check_heads(h)
        if q.is_cuda and _dist().get_backend(self.group) != "nccl":
            raise RuntimeError(f"q is on {q.device} but the process group runs {_dist().get_backend(self.group)}; "
                               "CUDA tensors need nccl")
        joint = video is not None or key_mask is not None
        video = check_joint(video, key_mask, b, s)
        mine = self.share(tokens)
        if video.stop - video.start != mine.stop - mine.start:
            raise ValueError(f"rank {self.rank} got {video.stop - video.start} video tokens; its share of {tokens} "
                             f"over {self.world_size} ranks is {mine.stop - mine.start}")
        hp = h // self.world_size
        heads = slice(self.rank * hp, (self.rank + 1) * hp)
        start, stop = video.start, video.stop

        def whole(t):  # (B, H, S_local, D) -> (B, H/P, S_text + tokens, D) in the local order of the parts
            return torch.cat([t[:, heads, :start], self.to_heads(t[:, :, start:stop], tokens),
                              t[:, heads, stop:]], dim=2)

        if joint:
            full_video = slice(start, start + tokens)
            full_mask = None if key_mask is None else torch.cat(
                [key_mask[:, :start], key_mask.new_ones(b, tokens), key_mask[:, stop:]], dim=1)
            out = method(whole(q), whole(k), whole(v), video=full_video, key_mask=full_mask,
                         heads=(heads.start, h), **call)
        else:
            out = method(whole(q), whole(k), whole(v), heads=(heads.start, h), **call)
        before, mid, after = out.split([start, tokens, out.shape[2] - start - tokens], dim=2)
        parts = [self.to_tokens(mid, tokens)]
        if start:
            parts.insert(0, self.gather(before, 1))
        if after.shape[2]:
            parts.append(self.gather(after, 1))
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
