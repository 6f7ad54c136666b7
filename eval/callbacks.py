"""Hydra callback: after a multirun (every launcher, SLURM included) rebuild the combined tables of its results
folder and draw its frontier, once, in the process that launched the jobs."""
from __future__ import annotations

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class FrontierReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from eval.results import ResultStore

        ResultStore(config.results_dir).combine()  # whole even where the last jobs combined under a stream of rows
        if not config.get("report", True):
            return
        from eval.frontier import report

        report(config.results_dir, config.metrics.frontier)
