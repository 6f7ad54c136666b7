"""Sweeps through Hydra's submitit launcher on a real SLURM (Debian's 22.05, started by the fixture on this
machine): an array writes one results folder; a cancelled task and a task at its time limit lose only the row
in flight; the same command again, with an overlapping array submitted at the same time, computes every
missing key once and draws the frontier at the end.

The time limit: SLURM warns a task ``signal_delay_s`` before its limit with USR2 (submitit's
``--signal=USR2@<s>``) and submitit requeues it. The test sends that USR2 itself (``scancel --signal=USR2``, as
submitit's own tests do): SLURM limits are whole minutes, checked every 30 s, so a limit reached on its own
would cost a minute or two and land at an unknown row.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.eval.conftest import REPO, TINY, compose_config
from tests.eval.slurm_cluster import ClusterUnavailable, SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# rows per task (0.6-0.7 s each here): a task is still busy when the test interrupts it after its first row.
# submitit ignores scancel's SIGTERM and a cancelled task runs on until srun's SIGKILL, 4-5 s later on this
# cluster (KillWait=2), so the rows after the first must take longer than that or the task finishes them all
SEEDS = list(range(16))
# the committed GPU config on the fixture's cluster: one core and a GB per task; its GPUs have no device behind
GPU_CONFIG_HERE = ["hydra/launcher=slurm_gpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
                   "hydra.launcher.timeout_min=10"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    try:
        cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    except ClusterUnavailable as e:
        pytest.skip(f"no SLURM cluster on this machine: {e}")
    yield cluster
    for sweep in Sweep.started:  # a failed test may leave one waiting on its jobs
        if sweep.proc.poll() is None:
            sweep.proc.kill()
            sweep.proc.wait()
    cluster.stop()


class Sweep:
    """``python -m eval.sweep -m ...`` submitting to the fixture's SLURM, in the background."""

    started: list["Sweep"] = []

    def __init__(self, slurm: SlurmCluster, sweep_dir: Path, *overrides: str):
        self.sweep_dir = sweep_dir
        self.log = Path(f"{sweep_dir}.{time.time_ns()}.log")
        env = {**slurm.env, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "eval.sweep", "-m", *overrides,
                                          f"hydra.sweep.dir={sweep_dir}"], cwd=REPO, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)
        Sweep.started.append(self)

    def wait(self, timeout: float = 240) -> tuple[int, str]:
        rc = self.proc.wait(timeout=timeout)
        return rc, self.log.read_text()

    def task_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.sweep_dir.glob(".submitit/*/*_log.*"))


def rows_of(results: Path, **match) -> dict[str, dict]:
    """Row files on disk by key (finished and failed), those whose columns equal ``match``."""
    rows = {}
    for p in results.glob("rows/[!.]*.json"):
        try:
            row = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if all(row.get(k) == v for k, v in match.items()):
            rows[p.name] = row
    return rows


def claims_of(results: Path) -> list[dict]:
    out = []
    for p in results.glob("claims/*.json"):
        try:
            out.append(json.loads(p.read_text() or "{}"))
        except (OSError, json.JSONDecodeError):
            pass
    return out


def array_tasks(sweep_dir: Path) -> list[str]:
    """``<array job>_<task>`` of every array task submitted from a sweep folder, oldest first."""
    names = [p.name for p in sweep_dir.glob(".submitit/[0-9]*_[0-9]*")]
    return sorted(names, key=lambda n: tuple(int(x) for x in n.split("_")))


def wait_until(condition, what: str, timeout: float = 150, every: float = 0.3):
    deadline = time.time() + timeout
    while not (value := condition()):
        if time.time() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(every)
    return value


@pytest.fixture(scope="module")
def interrupted(slurm, cache_dir, tmp_path_factory):
    """The README's array (svg2 at top_p 0.5 and 0.9, one task each, len(SEEDS) rows per task): once each task
    has a finished row and is in the middle of the next, task 0 is cancelled and task 1 gets its time limit's
    warning. Returns what the folder held at each point."""
    from omegaconf import OmegaConf

    from eval.models import ModelConfig

    # built before tasks that share the cache start: they would each build it at once
    ModelConfig(**OmegaConf.to_container(compose_config("model=tiny", f"cache_dir={cache_dir}").model,
                                         resolve=True)).prepare()
    root = tmp_path_factory.mktemp("interrupted")
    results = root / "results"
    # a limit of 10 min or less: submitit reads any USR2 as the time limit's warning, not as a preemption
    command = ["hydra/launcher=slurm_cpu", "hydra.launcher.timeout_min=10", "hydra.launcher.max_num_timeout=1",
               "method=svg2", *TINY,
               f"workload.seeds={SEEDS}", f"results_dir={results}", f"cache_dir={cache_dir}"]
    sweep = Sweep(slurm, root / "multirun", *command, "method.top_p=0.5,0.9")

    def mid_row(top_p):
        """The task's SLURM job once it has a finished row and holds a claim."""
        done = rows_of(results, **{"method.top_p": top_p})
        job = next(iter(done.values()))["slurm_job"] if done else None
        return job if job and job in {c.get("slurm_job") for c in claims_of(results)} else None

    jobs, deadline = {}, time.time() + 150
    while len(jobs) < 2:  # both tasks run at once: act on each as soon as it is mid-row
        if 0.5 not in jobs and (job := mid_row(0.5)):
            slurm.run("scancel", job)
            jobs[0.5] = job
        if 0.9 not in jobs and (job := mid_row(0.9)):
            slurm.run("scancel", "--signal=USR2", job)
            jobs[0.9] = job
        assert time.time() < deadline, f"tasks mid-row: {jobs}; " + sweep.log.read_text()[-3000:]
        time.sleep(0.2)
    wait_until(lambda: "Requeued job" in sweep.task_logs(), "task 1 to be requeued")
    before_requeue = rows_of(results, **{"method.top_p": 0.9})
    rc, out = sweep.wait()
    wait_until(lambda: not slurm.jobs(), "the queue to empty")
    return dict(root=root, results=results, command=command, sweep=sweep, rc=rc, out=out, cancelled=jobs[0.5],
                requeued=jobs[0.9], before_requeue=before_requeue, rows=rows_of(results),
                claims=claims_of(results))


def test_cancelled_task_loses_only_the_row_in_flight(slurm, interrupted):
    run = interrupted
    assert [r["state"] for r in slurm.accounting(run["cancelled"])] == ["CANCELLED"]
    kept = {k: r for k, r in run["rows"].items() if r["method.top_p"] == 0.5}
    assert 1 <= len(kept) < len(SEEDS) and all(r["status"] == "ok" for r in kept.values())
    assert not any(".error." in k for k in run["rows"])  # the kill is not a failed row
    # its claim on the row in flight is left behind (SIGKILL), held by a job SLURM knows has ended
    assert len(run["claims"]) <= 1 and all(c["slurm_job"] == run["cancelled"] for c in run["claims"])
    # a task failed, so the array's command fails and draws no frontier over a partial sweep
    assert run["rc"] != 0 and "frontier plot:" not in run["out"]


def test_task_at_its_time_limit_is_requeued_and_computes_only_its_missing_rows(slurm, interrupted):
    run = interrupted
    assert [r["state"] for r in slurm.accounting(run["requeued"])] == ["COMPLETED"]
    assert "this job is timed-out" in run["sweep"].task_logs()
    after = {k: r for k, r in run["rows"].items() if r["method.top_p"] == 0.9}
    before = run["before_requeue"]
    assert 1 <= len(before) < len(SEEDS) and len(after) == len(SEEDS)
    assert all(after[k] == row for k, row in before.items())  # the requeued run skipped them
    assert all(r["status"] == "ok" and r["slurm_job"] == run["requeued"] for r in after.values())


def test_same_command_again_with_an_overlapping_array_computes_every_missing_key_once(slurm, interrupted):
    # at the same time: the same command, and the GPU config over p0.5 (overlapping the cancelled task's
    # missing rows) and p0.7, submitted first and one task at a time, so that both p0.5 tasks run at once on
    # the two cores and share the missing rows through claims.
    run = interrupted
    results, before = run["results"], run["rows"]
    other = Sweep(slurm, run["root"] / "gpu", *GPU_CONFIG_HERE, *run["command"][1:],
                  "hydra.launcher.array_parallelism=1", "method.top_p=0.5,0.7")
    wait_until(lambda: slurm.jobs(), "the overlapping array in the queue")
    again = Sweep(slurm, run["root"] / "multirun", *run["command"], "method.top_p=0.5,0.9")
    (rc_again, out_again), (rc_other, out_other) = again.wait(), other.wait()
    assert (rc_again, rc_other) == (0, 0), out_again[-3000:] + out_other[-3000:]

    df = pd.read_csv(results / "results.csv")
    assert len(pd.read_parquet(results / "results.parquet")) == len(df) == 3 * len(SEEDS)
    assert df["key"].is_unique and (df["status"] == "ok").all()
    assert sorted(zip(df["method.top_p"], df["seed"])) == [(p, s) for p in (0.5, 0.7, 0.9) for s in SEEDS]
    after = rows_of(results)
    assert all(after[k] == row for k, row in before.items())  # nothing finished was computed again
    new = {k: r for k, r in after.items() if k not in before}
    again_05 = array_tasks(again.sweep_dir)[-2]  # the newest array of that folder; its task 0 is p0.5
    other_05, other_07 = array_tasks(other.sweep_dir)
    assert {r["slurm_job"] for r in new.values() if r["method.top_p"] == 0.5} <= {again_05, other_05}
    assert {r["slurm_job"] for r in new.values() if r["method.top_p"] == 0.7} == {other_07}
    assert not any(r["method.top_p"] == 0.9 for r in new.values())
    logs = again.task_logs() + other.task_logs()
    assert "computed twice" not in logs and "failed:" not in logs
    # each command drew the frontier once, after its tasks; no task drew it
    assert out_again.count("frontier plot:") == out_other.count("frontier plot:") == 1
    assert "frontier plot:" not in logs and (results / "frontier.png").is_file()
    assert not claims_of(results)  # the cancelled task's claim was taken over, and every claim released


def test_claim_of_a_task_on_another_node_expires_once_squeue_reports_its_job_ended(slurm, interrupted, monkeypatch):
    from eval.claims import Claims

    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_CLUSTER_NAME", "svg2test")  # as in a task of this cluster
    running = slurm.run("sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 60").stdout.strip()
    try:
        wait_until(lambda: any(j["id"] == running and j["state"] == "RUNNING" for j in slurm.jobs()), "sleep job")
        claims = Claims(interrupted["root"] / "claims")
        on_node7 = {"host": "node7", "pid": 1234, "slurm_restart": 0, "slurm_cluster": "svg2test"}
        assert not claims.expired({**on_node7, "slurm_job": running}, age_s=1)
        assert claims.expired({**on_node7, "slurm_job": interrupted["cancelled"]}, age_s=1)
        assert claims.expired({**on_node7, "slurm_job": "999999"}, age_s=1)  # purged or never known
    finally:
        slurm.run("scancel", running)
