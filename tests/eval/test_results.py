"""The results store under concurrent writers: a finished row is never replaced, a key is computed by one
writer at a time, and a killed writer's claim does not block the key."""
import json
import multiprocessing
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from eval.claims import Claims
from eval.results import ResultStore
from tests.eval.conftest import TINY, REPO


def ok(value):
    return {"status": "ok", "psnr": value}


def test_finished_row_is_never_replaced_by_an_error_or_a_duplicate(tmp_path):
    store = ResultStore(tmp_path)
    assert store.write("k", ok(30.0))
    assert not store.write("k", {"status": "error", "error": "RuntimeError: out of memory"})
    assert not store.write("k", ok(31.0))
    assert store.read("k")["psnr"] == 30.0 and store.duplicates == ["k"]
    assert [r["psnr"] for r in store.rows()] == [30.0] and not store.error_path("k").exists()


def test_failed_attempt_is_kept_until_the_key_finishes(tmp_path):
    store = ResultStore(tmp_path)
    assert store.write("k", {"status": "error", "error": "ValueError: x"})
    assert not store.finished("k") and store.read("k")["status"] == "error"
    assert store.write("k", ok(30.0))
    assert store.finished("k") and not store.error_path("k").exists()
    (row,) = store.rows()
    assert row["status"] == "ok" and row["key"] == "k"


def test_failed_row_of_the_single_file_layout_is_replaced_by_a_finished_one(tmp_path):
    store = ResultStore(tmp_path)
    store.path("k").parent.mkdir(parents=True)
    store.path("k").write_text(json.dumps({"status": "error", "key": "k"}))  # how rows were kept before claims
    assert store.write("k", ok(30.0)) and store.read("k")["status"] == "ok"


def test_files_are_readable_by_others_as_the_umask_allows(tmp_path):
    store = ResultStore(tmp_path)
    store.write("k", ok(30.0))
    store.combine()
    umask = os.umask(0)
    os.umask(umask)
    for path in (store.path("k"), tmp_path / "results.csv", tmp_path / "results.parquet"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_claim_is_exclusive_while_held_and_free_after(tmp_path):
    a, b = ResultStore(tmp_path), ResultStore(tmp_path)
    with a.claim("k") as other:
        assert other is None
        with b.claim("k") as holder:  # this process is alive, so its claim holds
            assert holder["pid"] == os.getpid()
        assert b.skipped_claimed == ["k"]
    with b.claim("k") as other:
        assert other is None
    assert not list((tmp_path / "claims").iterdir())


def test_claim_of_a_killed_process_on_this_host_expires_at_once(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    record = {**Claims(tmp_path).me, "pid": proc.pid, "pid_start": None, "token": "dead"}
    proc.kill()
    proc.wait()
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "k.json").write_text(json.dumps(record))
    with ResultStore(tmp_path).claim("k") as other:
        assert other is None


def test_claim_from_another_host_expires_when_its_heartbeat_stops(tmp_path):
    holder = Claims(tmp_path / "claims", stale_s=1.0)
    holder.me = {**holder.me, "host": "elsewhere"}  # a writer whose process this host cannot inspect
    other = Claims(tmp_path / "claims", stale_s=1.0)
    with holder.hold("k"):
        time.sleep(2.5)  # longer than stale_s: only the heartbeat keeps the claim fresh
        assert other.acquire("k")["host"] == "elsewhere"
    holder.acquire("k")
    holder._held.clear()  # the holder is killed: no more heartbeat
    time.sleep(1.5)
    assert other.acquire("k") is None


def test_claim_of_an_earlier_run_of_a_requeued_slurm_task_expires(tmp_path, monkeypatch):
    record = {"host": "node7", "pid": 1234, "slurm_job": "41", "slurm_restart": 0, "slurm_cluster": "c",
              "token": "old"}
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "k.json").write_text(json.dumps(record))
    monkeypatch.setenv("SLURM_CLUSTER_NAME", "c")
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # a second task of the same job: it holds
    assert Claims(tmp_path / "claims").acquire("k")["token"] == "old"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the same task, requeued: its earlier run has ended
    assert Claims(tmp_path / "claims").acquire("k") is None


def test_claim_of_a_slurm_job_is_judged_by_its_heartbeat_where_squeue_cannot_be_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CLUSTER_NAME", "c")
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue here
    claims = Claims(tmp_path, stale_s=60)
    record = {"host": "node7", "pid": 1234, "slurm_job": "41_3", "slurm_restart": 0, "slurm_cluster": "c"}
    assert not claims.expired(record, age_s=1) and claims.expired(record, age_s=61)


def _writer(folder, keys, out):
    """One writer of a sweep: claim each key, compute it (a sleep), write its row; list what it computed."""
    store = ResultStore(folder)
    computed = []
    for key in keys:
        if store.finished(key):
            continue
        with store.claim(key) as other:
            if other is not None or store.finished(key):
                continue
            time.sleep(0.3)
            store.write(key, {**ok(1.0), "pid": os.getpid()})
            store.combine()
            computed.append(key)
    out.put(computed)


def test_two_processes_compute_every_key_exactly_once(tmp_path):
    keys = [f"key{i}" for i in range(12)]
    ctx = multiprocessing.get_context("fork")  # the writers share nothing in memory: each builds its own store
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(tmp_path, keys, out)) for _ in range(2)]
    for p in procs:
        p.start()
    computed = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(computed[0] + computed[1]) == sorted(keys)  # every key once, none twice
    assert computed[0] and computed[1]  # and both did some of the work
    df = pd.read_csv(tmp_path / "results.csv")
    assert sorted(df["key"]) == sorted(keys) and (df["status"] == "ok").all()
    assert not list((tmp_path / "claims").iterdir())


@pytest.mark.slow
def test_two_identical_sweeps_at_once_keep_every_row_ok(tmp_path, cache_dir):
    """The default sweep started twice into one results folder (issue 15): every row ok, computed once."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-m", "eval.sweep", *TINY, f"results_dir={tmp_path}", f"cache_dir={cache_dir}",
            "report=false"]
    procs = [subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    df = pd.read_csv(tmp_path / "results.csv")
    assert len(df) == 6 and df["key"].is_unique and (df["status"] == "ok").all()
    assert not any("computed twice" in o or "failed:" in o for o in outputs), outputs
    assert all((tmp_path / "frames" / f"{k}.gif").is_file() for k in df["key"])
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not leftovers and not list((tmp_path / "claims").iterdir()) and not list(tmp_path.glob("rows/*.error.json"))
