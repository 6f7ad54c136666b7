"""The one CSV writer of the benchmarks: every row carries the run's environment (``eval.results.environment``:
hardware, library versions, commit), and the file is rewritten atomically after each row, so a run that is
interrupted or times out keeps the rows measured so far."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from eval.results import atomic_write, environment


class RowWriter:
    """Rows of one benchmark run; ``path`` None keeps them in memory only."""

    def __init__(self, path: str | Path | None, **shared):
        self.path = Path(path) if path is not None else None
        self.shared = shared  # columns every row of this run has (dtype, input kind, ...)
        self.rows: list[dict] = []

    def add(self, row: dict) -> dict:
        row = {**row, **self.shared, **environment()}
        self.rows.append(row)
        if self.path is not None:
            atomic_write(self.path, self.frame().to_csv(index=False).encode())
        return row

    def frame(self) -> pd.DataFrame:
        """The rows so far: measured columns first (in the order they first appear), environment last."""
        df = pd.DataFrame(self.rows)
        env = [c for c in environment() if c in df]
        return df[[c for c in df if c not in env] + env]
