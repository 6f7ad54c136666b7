"""Sequence-parallel sweeps (``parallel.world_size=P``): P ranks generate every row together, one GPU each (NCCL)
or P gloo processes on the CPU, with Ulysses sequence parallelism inside the transformer (``svg2.parallel``).

    torchrun --nproc-per-node=2 -m eval.sweep parallel.world_size=2 sweep=wan_t2v_720p_paper model.path=...
    python -m eval.sweep parallel.world_size=2 ...      # no launcher: the sweep starts the 2 ranks itself

Rank 0 alone claims, skips and writes rows (with its own and every rank's timings); the others follow its
decisions, so all ranks make the same calls in the same order. A row that fails stops the sweep: the other ranks
would wait in a collective that never comes.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from svg2.parallel import Ulysses, init_ranks, launched

__all__ = ["Ranks", "launched", "rank_device", "spawn"]


@dataclass(frozen=True)
class Ranks:
    """The ranks a sweep job runs on; ``Ranks()`` is one process, and every call below is then the plain value."""

    ulysses: Ulysses | None = None

    @classmethod
    def join(cls, world_size: int, device: str) -> "Ranks":
        if world_size == 1:
            return cls()
        return cls(init_ranks(device, world_size))

    @property
    def rank(self) -> int:
        return self.ulysses.rank if self.ulysses else 0

    @property
    def world_size(self) -> int:
        return self.ulysses.world_size if self.ulysses else 1

    @property
    def writer(self) -> bool:
        return self.rank == 0

    def agree(self, decide):
        """Rank 0's ``decide()``, on every rank (the others never call it)."""
        if self.ulysses is None:
            return decide()
        import torch.distributed as dist

        box = [decide() if self.writer else None]
        dist.broadcast_object_list(box, src=0, group=self.ulysses.group)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's ``value``, in rank order."""
        return [value] if self.ulysses is None else self.ulysses.gather_objects(value)

    def whole_calls(self, calls: list[dict]) -> list[dict]:
        """A generation's attention-call rows (``CallStats.as_row``) as rows of the whole calls: each rank held H/P
        heads of every call, so a call's density is the mean of the ranks' (its timings stay this rank's)."""
        every = self.gather([c["density"] for c in calls])
        return [{**c, "density": sum(r[i] for r in every) / len(every)} for i, c in enumerate(calls)]

    def first(self, work):
        """``work()`` on rank 0, then on the others (for work that writes shared files, such as building the tiny
        pipeline on first use)."""
        if self.ulysses is None:
            return work()
        import torch.distributed as dist

        out = work() if self.writer else None
        dist.barrier(group=self.ulysses.group)
        return out if self.writer else work()


def rank_device(device: str, world_size: int) -> str:
    """Rank r of a parallel job on a GPU machine uses cuda:LOCAL_RANK (one GPU per rank); the CPU stays the CPU."""
    if world_size == 1 or device == "cpu":
        return device
    if device != "cuda":
        raise ValueError(f"device={device!r} with parallel.world_size={world_size}; expected device=auto, cuda or "
                         "cpu (rank r runs on cuda:r)")
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def spawn(world_size: int, fn, *args):
    """Start ``world_size`` ranks on this machine, each running ``fn(*args)`` with a launcher environment (as
    torchrun gives), and return rank 0's result. A failing rank stops them all and raises here."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_main, args=(world_size, port, results, fn, args), nprocs=world_size,
                       start_method="spawn")
    return results.get()


def _rank_main(rank: int, world_size: int, port: int, results, fn, args) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    out = fn(*args)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    if rank == 0:
        results.put(out)
