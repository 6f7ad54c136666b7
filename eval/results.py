"""The one results writer: one tidy row per (method config, model, prompt, seed), one JSON file each.

Rows are written atomically (temp file + rename), so an interrupted sweep loses at most the row in
flight and a rerun skips every row already finished. ``combine`` rebuilds ``results.csv`` and
``results.parquet`` from the row files; it is cheap and safe to call after every row.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parent.parent


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Files get the permissions of any file this user creates (mkstemp's are 0600): on a shared results folder,
# other users can read what every writer wrote.
FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def stable_key(*parts) -> str:
    """Short hash of JSON-serialisable parts; equal configs give equal keys across processes."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    return value


class ResultStore:
    """``folder/rows/<key>.json`` per row, ``folder/results.{csv,parquet}`` combined."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.rows_dir = self.folder / "rows"

    def path(self, key: str) -> Path:
        return self.rows_dir / f"{key}.json"

    def read(self, key: str) -> dict | None:
        try:
            return json.loads(self.path(key).read_text())
        except FileNotFoundError:
            return None

    def finished(self, key: str) -> bool:
        row = self.read(key)
        return row is not None and row.get("status") == "ok"

    def write(self, key: str, row: dict) -> Path:
        row = {k: _jsonable(v) for k, v in {**row, "key": key}.items()}
        atomic_write(self.path(key), json.dumps(row, indent=1, sort_keys=False, default=str).encode())
        return self.path(key)

    def rows(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.rows_dir.glob("*.json"))]

    def frame(self) -> pd.DataFrame:
        return rows_frame(self.rows())

    def combine(self) -> pd.DataFrame:
        df = self.frame()
        if len(df):
            atomic_write(self.folder / "results.csv", df.to_csv(index=False).encode())
            flat = df.copy()
            for col in flat.columns:  # parquet wants one type per column
                if flat[col].map(lambda v: isinstance(v, (list, dict))).any():
                    flat[col] = flat[col].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
                elif flat[col].dtype == object:
                    flat[col] = flat[col].map(lambda v: None if v is None else str(v))
            buf = io.BytesIO()  # through atomic_write: concurrent jobs each use their own temporary file
            flat.to_parquet(buf, index=False)
            atomic_write(self.folder / "results.parquet", buf.getvalue())
        return df


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows to a DataFrame with per-call detail (lists) dropped from the tidy table."""
    tidy = [{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in rows]
    return pd.DataFrame(tidy)


def load_results(folder) -> pd.DataFrame:
    """Every row of a results folder (the row files are the source of truth; a CSV alone also works)."""
    folder = Path(folder)
    if (folder / "rows").is_dir():
        return ResultStore(folder).frame()
    if (folder / "results.csv").is_file():
        return pd.read_csv(folder / "results.csv")
    raise FileNotFoundError(f"{folder} holds no rows/ folder or results.csv; expected a results folder of eval.sweep")


@lru_cache(maxsize=1)
def environment() -> dict:
    """Hardware, library versions and commit, recorded in every row."""
    import importlib.metadata as md

    env = {"python": platform.python_version(), "torch": torch.__version__, "cpu": _cpu_name(),
           "cpu_count": os.cpu_count()}
    for lib in ("diffusers", "triton", "transformers", "flash-kmeans"):
        try:
            env[lib.replace("-", "_")] = md.version(lib)
        except md.PackageNotFoundError:
            env[lib.replace("-", "_")] = None
    env["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    env["commit"], env["dirty"] = _git_commit()
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit(root: Path = REPO) -> tuple[str, bool | None]:
    """HEAD of this project's repository and whether tracked files differ from it. ``SVG2_COMMIT`` names it where
    the code runs from a copy (a GPU machine's); a repository that only encloses the copy is not this project's,
    so its HEAD is never recorded: then the commit is 'unknown'."""
    if os.environ.get("SVG2_COMMIT"):
        return os.environ["SVG2_COMMIT"], None

    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve() or not _is_project(root):
            return "unknown", None
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return head.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def _is_project(root: Path) -> bool:
    try:
        return 'name = "svg2"' in (root / "pyproject.toml").read_text()
    except OSError:
        return False
