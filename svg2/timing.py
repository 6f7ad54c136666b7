"""The one clock: CUDA events on the GPU (read only when the numbers are asked for, so timing never
synchronises a call), ``perf_counter`` on the CPU. Whoever reports CPU times labels them so (``Clock.label``).

- ``Clock``: marks and spans in milliseconds.
- ``StageTimer``: per-stage spans of one attention call (cluster, permute, select, attend).
- ``ForwardTimer``: every forward of a module (the transformer: one per CFG branch per step).
- ``median_ms``: median of repeated calls after warm-up.
"""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

import torch

# The stages of a sparse call, in order. On the CPU path the query permutation and the output's inverse are
# part of "attend" (the Triton kernel reads q and writes the output through the query order itself).
STAGES = ("cluster", "permute", "select", "attend")


class Clock:
    def __init__(self, device: torch.device | str):
        self.cuda = torch.device(device).type == "cuda"
        self.label = "cuda_events" if self.cuda else "cpu_wall"

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def ms(self, start, end) -> float:
        """Milliseconds between two marks; waits for the second one on CUDA."""
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end)
        return 1e3 * (end - start)


class StageTimer:
    """Spans of named stages; ``resolve`` sums repeats of a stage (milliseconds)."""

    def __init__(self, device: torch.device | str, enabled: bool = True):
        self.clock = Clock(device)
        self.enabled = enabled
        self._spans: dict[str, list] = {}

    @contextmanager
    def stage(self, name: str):
        if not self.enabled:
            yield
            return
        start = self.clock.mark()
        yield
        self._spans.setdefault(name, []).append((start, self.clock.mark()))

    def resolve(self) -> dict[str, float]:
        return {name: sum(self.clock.ms(a, b) for a, b in spans) for name, spans in self._spans.items()}


class ForwardTimer:
    """Milliseconds of every forward of a module, from hooks; ``remove`` drops the hooks and returns them."""

    def __init__(self, module: torch.nn.Module, clock: Clock):
        self.clock, self.spans = clock, []
        self._handles = [module.register_forward_pre_hook(lambda *_: self.spans.append([clock.mark(), None])),
                         module.register_forward_hook(lambda *_: self.spans[-1].__setitem__(1, clock.mark()))]

    def remove(self) -> list[float]:
        for h in self._handles:
            h.remove()
        return [self.clock.ms(a, b) for a, b in self.spans if b is not None]


def median_ms(clock: Clock, fn, repeats: int, warmup: int = 0) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(repeats, 1)):
        start = clock.mark()
        fn()
        times.append(clock.ms(start, clock.mark()))
    return statistics.median(times)
