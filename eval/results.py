"""The one results writer: one tidy row per (method config, model, prompt, seed), one JSON file each.

Any number of writers (processes, GPUs, SLURM tasks, hosts) can share a results folder. A finished row is
written once and never replaced; a key being computed is claimed (``eval.claims``) so others skip it; every
file goes through a temporary file of its own and a rename, so an interrupted sweep loses at most the row in
flight and a rerun skips every row already finished. ``combine`` rebuilds ``results.csv`` and
``results.parquet`` from the row files; it is cheap and safe to call after every row.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import socket
import subprocess
import uuid
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import pandas as pd
import torch

from eval.claims import Claims, publish_once, slurm_job_id

REPO = Path(__file__).resolve().parent.parent


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Files get the permissions of any file this user creates (mkstemp's would be 0600): on a shared results folder,
# other users can read what every writer wrote.
FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` through a temporary file unique to this write (so concurrent writers of one
    path never share one), created with the umask's permissions like any other file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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
    """``folder/rows/<key>.json`` per finished row (written once), ``rows/<key>.error.json`` for the last failed
    attempt of a key not finished yet, ``folder/claims/<key>.json`` while a writer computes a key,
    ``folder/results.{csv,parquet}`` combined. ``skipped_claimed`` and ``duplicates`` count, for this writer,
    keys left to another writer that was computing them and rows dropped because another writer had finished
    the key first."""

    def __init__(self, folder, claim_stale_s: float | None = None):
        self.folder = Path(folder)
        self.rows_dir = self.folder / "rows"
        self.claims = Claims(self.folder / "claims", claim_stale_s)
        self.skipped_claimed: list[str] = []
        self.duplicates: list[str] = []
        self._parsed: dict[str, tuple[tuple, dict]] = {}  # row file name -> (its stamp when read, its row)

    def path(self, key: str) -> Path:
        return self.rows_dir / f"{key}.json"

    def error_path(self, key: str) -> Path:
        return self.rows_dir / f"{key}.error.json"

    def read(self, key: str) -> dict | None:
        """The finished row of ``key``, else its last failed attempt, else None."""
        return _read_row(self.path(key)) or _read_row(self.error_path(key))

    def finished(self, key: str) -> bool:
        row = self.read(key)
        return row is not None and row.get("status") == "ok"

    @contextmanager
    def claim(self, key: str):
        """Around computing ``key``: yields None while this writer holds it, or the record of the live writer
        that does (skip the key then; it is counted in ``skipped_claimed``)."""
        with self.claims.hold(key) as other:
            if other is not None:
                self.skipped_claimed.append(key)
            yield other

    def write(self, key: str, row: dict) -> bool:
        """Store a row; False when it was dropped because ``key`` is already finished on disk (a finished row is
        never replaced, neither by a failed attempt nor by a second finished one)."""
        row = {k: _jsonable(v) for k, v in {**row, "key": key}.items()}
        data = json.dumps(row, indent=1, sort_keys=False, default=str).encode()
        if row.get("status") == "ok":
            if not publish_once(self.path(key), data):
                if self.finished(key):
                    self.duplicates.append(key)
                    return False
                atomic_write(self.path(key), data)  # a failed row where older versions kept every row
            self.error_path(key).unlink(missing_ok=True)
            return True
        if self.finished(key):
            return False
        atomic_write(self.error_path(key), data)
        if self.finished(key):  # finished meanwhile by another writer: its row alone stands
            self.error_path(key).unlink(missing_ok=True)
        return True

    def rows(self) -> list[dict]:
        """One row per key, in key order: the finished one where there is one, else the last failed attempt."""
        return self._rows(self._row_files())[0]

    def frame(self) -> pd.DataFrame:
        return rows_frame(self.rows())

    def combine(self) -> pd.DataFrame:
        """Rebuild the combined tables. Writers that combine at the same time each check, after writing, that no
        row file changed since they read them, and combine again if one did, so the last table written holds
        every row (after a few rounds under a stream of new rows, the next combine catches up). Only row files
        new or changed since this store last read them are parsed again."""
        files = self._row_files()
        for _ in range(3):
            rows, seen = self._rows(files)
            df = rows_frame(rows)
            if len(df):
                atomic_write(self.folder / "results.csv", df.to_csv(index=False).encode())
                flat = df.copy()
                for col in flat.columns:  # parquet wants one type per column
                    if flat[col].dtype == object:
                        flat[col] = flat[col].map(lambda v: None if v is None else str(v))
                buf = io.BytesIO()
                flat.to_parquet(buf, index=False)
                atomic_write(self.folder / "results.parquet", buf.getvalue())
            files = self._row_files()
            if files == seen:
                break
        return df

    def _row_files(self) -> dict[str, tuple]:
        """Stamp (inode, mtime, size) of every row file (finished or failed) by name: one listing of rows/."""
        try:
            entries = list(os.scandir(self.rows_dir))
        except FileNotFoundError:
            return {}
        out = {}
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(".json"):  # temporary files
                continue
            try:
                out[entry.name] = _stamp(entry.stat())
            except FileNotFoundError:
                pass
        return out

    def _rows(self, files: dict[str, tuple]) -> tuple[list[dict], dict[str, tuple]]:
        """(``rows()`` of these row files, their stamps as read). A file is parsed again only when its stamp
        changed since this store read it: row files are published by link or rename, so any change is a new
        inode."""
        seen, parsed, by_key = dict(files), {}, {}
        for name in sorted(files):
            cached = self._parsed.get(name)
            if cached is not None and cached[0] == files[name]:
                parsed[name] = cached
            else:
                stamp, row = _read_stamped(self.rows_dir / name)
                if row is None:
                    continue
                parsed[name] = (stamp, row)
                seen[name] = stamp  # what was read, where the file changed since it was listed
            row = parsed[name][1]
            key = row.get("key", name.split(".")[0])
            if key not in by_key or row.get("status") == "ok":
                by_key[key] = row
        self._parsed = parsed  # files gone (failed attempts of keys since finished) are forgotten
        return [by_key[k] for k in sorted(by_key)], seen


def _stamp(st: os.stat_result) -> tuple:
    return st.st_ino, st.st_mtime_ns, st.st_size


def _read_stamped(path: Path) -> tuple[tuple | None, dict | None]:
    """(stamp, row) of one row file as read (the stamp of the very file read); (None, None) where it is gone or
    not complete yet."""
    try:
        with open(path) as f:
            stamp, text = _stamp(os.fstat(f.fileno())), f.read()
        return stamp, json.loads(text)
    except (FileNotFoundError, json.JSONDecodeError):  # gone, or not complete yet (no hard links there)
        return None, None


def _read_row(path: Path) -> dict | None:
    return _read_stamped(path)[1]


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
    env["host"] = socket.gethostname()
    env["slurm_job"] = slurm_job_id()  # the task's log is under <sweep dir>/.submitit/<slurm_job>/
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
