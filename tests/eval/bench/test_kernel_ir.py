"""The compiler pipelines the gathered K/V loads of the sparse kernel (compiled for sm_90 on the CPU).

Compiled in a subprocess without TRITON_INTERPRET (the interpreter patches triton.language in the test
process) and with an empty Triton cache, so the kernel really goes through the compiler."""
import json
import os
import subprocess
import sys

import pytest

from svg2.kernels.varblock import default_config


def _schedule(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton")
    done = subprocess.run([sys.executable, "-m", "eval.bench.kernel_ir", "--json", *args], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_default_config_prefetches_kv_beyond_the_next_tile(tmp_path):
    cfg = default_config()
    info = _schedule(tmp_path)
    assert info["kv_slots"] == [cfg.num_stages] * 4  # K and V of both loops buffered num_stages deep
    boxes, gathered = info["loops"]
    assert boxes["tma_loads"] == 2  # box tiles: K and V through TMA descriptors
    # The wait before a gathered tile's QK dot leaves later tiles' copies in flight (0 would mean no prefetch).
    assert gathered["waits"] and gathered["waits"][0] > 0
    assert info["shared_bytes"] <= 232448  # fits an H200 SM


def test_two_stages_buffer_two_tiles(tmp_path):
    assert _schedule(tmp_path, "--config", "M64 N64 w4 s2 c16 kg")["kv_slots"] == [2, 2]
