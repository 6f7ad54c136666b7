"""Per-stage timing of one attention call without host synchronisation.

On CUDA, stages are bracketed by events and read only when the numbers are asked for; on the CPU a
wall clock is used (and such times are labelled CPU by whoever reports them).
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch

# The stages of a sparse call, in order; the Triton path has no "unpermute" (its kernel writes the output
# in the original order).
STAGES = ("cluster", "permute", "select", "attend", "unpermute")


class StageTimer:
    def __init__(self, device: torch.device, enabled: bool = True):
        self.cuda = device.type == "cuda"
        self.enabled = enabled
        self._spans: dict[str, list] = {}

    @contextmanager
    def stage(self, name: str):
        if not self.enabled:
            yield
            return
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._spans.setdefault(name, []).append((start, end))
        else:
            t0 = time.perf_counter()
            yield
            self._spans.setdefault(name, []).append(time.perf_counter() - t0)

    def resolve(self) -> dict[str, float]:
        """Milliseconds per stage (summed over repeats of a stage). Waits for CUDA events to complete."""
        out = {}
        for name, spans in self._spans.items():
            if self.cuda:
                spans[-1][1].synchronize()
                out[name] = sum(s.elapsed_time(e) for s, e in spans)
            else:
                out[name] = 1e3 * sum(spans)
        return out
