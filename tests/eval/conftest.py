import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import eval  # noqa: F401  (registers the method schemas in Hydra's ConfigStore)

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
# The smallest budget that still runs every stage: one prompt, two denoising steps, no warm-up generation.
TINY = ["model=tiny", "workload.num_prompts=1", "workload.steps=2", "workload.warmup_steps=0", "progress=false"]


def compose_config(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run_sweep(*overrides):
    from eval.sweep import run

    return run(compose_config(*overrides))


def run_cli(*args, module="eval.sweep", timeout=300):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One cache (tiny model, dense references, captured Q/K/V) for the whole test session."""
    return tmp_path_factory.mktemp("svg2-cache")


@pytest.fixture(scope="session")
def quick_results(tmp_path_factory, cache_dir):
    """The default sweep through the CLI at the tiny budget: (results folder, completed process)."""
    folder = tmp_path_factory.mktemp("results") / "quick"
    proc = run_cli(*TINY, f"results_dir={folder}", f"cache_dir={cache_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, proc
