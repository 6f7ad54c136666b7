import pandas as pd
import pytest

from tests.eval.conftest import run_cli

SMALL_ATTENTION = ["experiment=attention_synthetic", "workload.shape=null", "workload.grid=[3,8,8]",
                   "workload.dtype=float32", "workload.centres=16", "workload.repeats=1", "workload.warmup=0",
                   "model.clusters.q=8", "model.clusters.k=16", "progress=false"]


@pytest.mark.slow
def test_multirun_through_submitit_local_executor(tmp_path, cache_dir):
    results = tmp_path / "results"
    proc = run_cli("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
                   f"hydra.sweep.dir={tmp_path / 'multirun'}", "method=svg2", "method.top_p=0.5,0.9",
                   *SMALL_ATTENTION, f"results_dir={results}", f"cache_dir={cache_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_csv(results / "results.csv")
    assert sorted(df["method.top_p"]) == [0.5, 0.9] and (df["status"] == "ok").all()
    # each job ran in its own submitit process and wrote its own log
    assert len(list((tmp_path / "multirun" / ".submitit").glob("*/*_log.out"))) == 2
    # the multirun callback drew the frontier once every job had finished
    assert (results / "frontier.png").is_file() and "frontier plot:" in proc.stdout
    assert df.set_index("method.top_p")["density"][0.5] < df.set_index("method.top_p")["density"][0.9]


def test_committed_slurm_launcher_configs_compose_over_submitits():
    # run on a real SLURM in tests/eval/test_slurm.py; here: they compose (Hydra checks every key against the
    # plugin's schema) and say what the README promises
    from hydra import compose, initialize_config_dir

    from tests.eval.conftest import CONF

    def launcher(name, *overrides):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", [f"hydra/launcher={name}", *overrides], return_hydra_config=True).hydra.launcher

    gpu = launcher("slurm_gpu", "hydra.launcher.partition=gpu")
    assert gpu._target_.endswith("SlurmLauncher") and gpu.partition == "gpu"
    assert (gpu.gpus_per_node, gpu.tasks_per_node, gpu.max_num_timeout) == (1, 1, 3)
    assert gpu.signal_delay_s < gpu.timeout_min * 60
    cpu = launcher("slurm_cpu")
    assert cpu.gpus_per_node is None and cpu.cpus_per_task == 1 and cpu.signal_delay_s < cpu.timeout_min * 60
