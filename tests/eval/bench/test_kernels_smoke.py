"""``eval.bench.kernels --smoke``: the GPU kernel benchmark's own code runs end to end on tiny shapes under the
Triton interpreter (its sections catch and print errors, so the test reads the rows it wrote)."""
import json
import os
import subprocess
import sys

import pytest

from tests.eval.conftest import REPO


@pytest.mark.slow
def test_kernel_bench_smoke_writes_checked_sparse_and_kmeans_rows(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-m", "eval.bench.kernels", "--smoke", "--repeats", "1",
                           "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    sparse = [r for r in rows if r["section"] == "sparse"]
    assert {r["plan"] for r in sparse} == {"svg2", "positional"}, done.stdout[-3000:] + done.stderr[-3000:]
    assert all(r["rel_l2"] < 1e-4 and not r["nan"] and r["work_over_kept"] >= 1 for r in sparse)
    assert [r["labels_equal_default"] for r in rows if r["section"] == "kmeans"] == [True]
