"""Hydra callback: after a multirun (every launcher, SLURM included) rebuild the combined tables of its results
folder and draw its frontier, once, in the process that launched the jobs; say how many of its rows failed, and
exit non-zero when any did (unless allow_failures)."""
from __future__ import annotations

import sys
import time

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class FrontierReport(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from eval.results import ResultStore

        store = ResultStore(config.results_dir)
        combined = store.combine()  # whole even where the last jobs combined under a stream of rows
        if config.get("report", True):
            from eval.frontier import report

            # the rows just combined; without a rows/ folder the report loads (and says there are none)
            report(config.results_dir, config.metrics.frontier, combined if store.rows_dir.is_dir() else None)
        since = getattr(self, "started", "")
        rows = [r for r in store.rows() if str(r.get("finished_at", "")) >= since]  # parsed by combine already
        failed = sum(r.get("status") != "ok" for r in rows)
        print(f"multirun: {len(rows) - failed} rows ok, {failed} failed in {config.results_dir}")
        if failed and not config.get("allow_failures", False):
            sys.exit(1)
