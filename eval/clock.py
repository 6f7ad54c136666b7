"""Wall-clock spans that are honest on both devices: CUDA events on the GPU (read after one sync at the
end), ``perf_counter`` on the CPU. Rows record which one was used (``timer``: cuda_events | cpu_wall)."""
from __future__ import annotations

import statistics
import time

import torch


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
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end)
        return 1e3 * (end - start)


class ForwardTimer:
    """Milliseconds of every forward of a module (the transformer: one per CFG branch per step)."""

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
