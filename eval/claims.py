"""Claims on result keys: a writer that computes a key holds ``<folder>/<key>.json`` while it does, so that
other writers into the same results folder (processes, GPUs, SLURM tasks, hosts) skip the key instead of
computing it twice.

A claim is created atomically (hard link of a complete file, so nobody reads a half-written one) and records
its writer: host, pid, the pid's start time and namespace, and the SLURM job (id, restart count, cluster) when
there is one. While the key is computed a background thread refreshes the claim's mtime (the heartbeat). A claim
expires, and the next writer takes the key, when

- its heartbeat is older than ``stale_s`` (a writer killed on a host we cannot inspect, or hung), or
- its writer is known to be gone: a process of this host and pid namespace that no longer runs, an earlier run
  of this same (requeued) SLURM task, or a SLURM job of this cluster that ``squeue`` reports finished.

Breaking an expired claim moves it aside under a unique name before the new one is created; in the rare race of
two writers breaking the same expired claim at once a key can be computed twice, which the results store makes
harmless (a finished row is never replaced, see ``ResultStore.write``).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

STALE_S = 600.0  # a claim whose heartbeat (every STALE_S / 5) stopped this long ago has lost its writer
# squeue states after which a job's processes are gone (slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES)
SLURM_ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
               "PREEMPTED", "TIMEOUT"}


def publish_once(path: Path, data: bytes) -> bool:
    """Create ``path`` with ``data`` unless it exists; never a partial file, never a replaced one. False: it
    existed. Hard links are atomic create-if-absent on local and cluster filesystems (NFS, Lustre, GPFS)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some FUSE or SMB mounts): exclusive create, then the content
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def slurm_job_id() -> str | None:
    """This process's SLURM job as squeue, sacct and scancel name it (``<array job>_<task>`` in an array), or
    None outside SLURM."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def writer_identity() -> dict:
    """Who this process is, as other writers need to judge whether it still runs."""
    pid = os.getpid()
    env = os.environ
    return dict(host=socket.gethostname(), pid=pid, pid_start=_pid_start(pid), pidns=_pidns(),
                slurm_job=slurm_job_id(), slurm_restart=int(env.get("SLURM_RESTART_COUNT") or 0),
                slurm_cluster=env.get("SLURM_CLUSTER_NAME"), since=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


class Claims:
    """Claims of one folder; ``hold(key)`` around the computation of a key."""

    def __init__(self, folder, stale_s: float | None = None):
        stale_s = STALE_S if stale_s is None else stale_s
        if not isinstance(stale_s, (int, float)) or not stale_s > 0:
            raise ValueError(f"claim_stale_s={stale_s!r}; expected seconds > 0")
        self.folder = Path(folder)
        self.stale_s = float(stale_s)
        self.me = writer_identity()
        self._held: dict[str, str] = {}  # key -> token of our claim file
        self._lock = threading.Lock()
        self._beat: threading.Thread | None = None

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    @contextmanager
    def hold(self, key: str):
        """Yields None while this writer holds ``key``, or the record of the live writer that holds it (then
        skip the key). The claim is released when the block ends, whatever way it ends."""
        other = self.acquire(key)
        try:
            yield other
        finally:
            if other is None:
                self.release(key)

    def acquire(self, key: str) -> dict | None:
        """None: ours now. Otherwise the holder's record."""
        path = self.path(key)
        record = {}
        for _ in range(3):  # a claim may vanish or be broken by someone else between our steps
            token = uuid.uuid4().hex
            if publish_once(path, json.dumps({**self.me, "token": token}).encode()):
                with self._lock:
                    self._held[key] = token
                self._start_heartbeat()
                return None
            found = read_claim(path)
            if found is None:
                continue
            record, age = found
            if not self.expired(record, age):
                return record
            self._break(path, record)
        return record  # it kept changing hands: leave the key to the others

    def release(self, key: str) -> None:
        with self._lock:
            token = self._held.pop(key, None)
        found = read_claim(self.path(key))
        if token is not None and found is not None and found[0].get("token") == token:
            self.path(key).unlink(missing_ok=True)

    def expired(self, record: dict, age_s: float) -> bool:
        """Whether a claim no longer protects its key: no heartbeat for stale_s, or its writer is gone."""
        if age_s > self.stale_s:
            return True
        me = self.me
        if record.get("host") == me["host"] and record.get("pidns") == me["pidns"] and record.get("pid"):
            return not _pid_running(record["pid"], record.get("pid_start"))
        job = record.get("slurm_job")
        if job and record.get("slurm_cluster") and record.get("slurm_cluster") == me["slurm_cluster"]:
            if job == me["slurm_job"]:  # this task, requeued: its earlier run has ended
                return int(record.get("slurm_restart") or 0) < me["slurm_restart"]
            return _slurm_job_ended(job)
        return False

    def _break(self, path: Path, judged: dict) -> None:
        aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.expired")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        moved = read_claim(aside)
        if moved is not None and moved[0].get("token") != judged.get("token"):
            try:  # someone broke it first and claimed anew: give their claim back
                os.link(aside, path)
            except OSError:
                pass
        aside.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        with self._lock:
            if self._beat is None or not self._beat.is_alive():
                self._beat = threading.Thread(target=self._heartbeat, name="claims-heartbeat", daemon=True)
                self._beat.start()

    def _heartbeat(self) -> None:
        interval = max(0.2, self.stale_s / 5)
        while True:
            time.sleep(interval)
            with self._lock:
                held = dict(self._held)
                if not held:  # the next claim starts a new heartbeat
                    self._beat = None
                    return
            for key, token in held.items():
                found = read_claim(self.path(key))
                if found is not None and found[0].get("token") == token:
                    try:
                        os.utime(self.path(key))
                    except FileNotFoundError:
                        pass


def read_claim(path: Path) -> tuple[dict, float] | None:
    """(record, age in seconds since its last heartbeat), or None when there is no claim."""
    try:
        age = time.time() - path.stat().st_mtime
        return json.loads(path.read_text() or "{}"), age
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):  # not ours to judge: only its age can expire it
        return {}, age


def _pid_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pidns() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _pid_running(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    return start is None or _pid_start(pid) in (None, start)


def _slurm_job_ended(job: str) -> bool:
    """True when squeue reports the job finished or no longer knows it; False when it runs or cannot be asked."""
    try:
        proc = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(job), "-o", "%T"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    if proc.returncode != 0:
        return "Invalid job id" in proc.stderr
    states = proc.stdout.split()
    return not states or all(s in SLURM_ENDED for s in states)
