"""Hydra callback: after a multirun (every launcher, SLURM included) draw the frontier of its results."""
from __future__ import annotations

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class FrontierReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not config.get("report", True):
            return
        from eval.frontier import report

        report(config.results_dir, config.metrics.frontier)
