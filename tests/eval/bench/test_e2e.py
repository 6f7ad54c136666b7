"""The end-to-end benchmark at toy size on the CPU: the rows and figure it writes, and its Amdahl account."""
import pandas as pd
import pytest

from eval.bench.e2e import TOY, bench_methods, main, summarise, with_layers
from eval.shapes import SHAPES


def test_toy_run_writes_table_and_figure(tmp_path):
    out = tmp_path / "e2e.csv"
    df = main(["--toy", "--repeats", "1", "--densities", "0.25", "--out", str(out)])
    assert out.is_file() and out.with_suffix(".png").is_file()
    saved = pd.read_csv(out)
    assert len(saved) == len(df) == 2 * 5  # dense; positional, svg2 at one density; both presets; two models
    assert "error" not in saved or saved["error"].isna().all()
    assert (saved["timer"] == "cpu_wall").all() and saved["finite"].all()
    assert saved["tokens"].tolist() == [192] * 10
    dense = saved[saved["method_name"] == "dense"]
    assert (dense["density"] == 1.0).all() and (dense["ceiling_fraction"] == 1.0).all()
    sparse = saved[saved["method"].isin(["positional_d0.25", "svg2_d0.25"])]
    assert (sparse["density"] < 0.6).all()
    # A sparse step's ceiling is below the dense step it is measured against.
    assert (sparse["ms_ceiling"] < dense["ms_step"].repeat(2).to_numpy()).all()


def test_amdahl_ceiling_and_generation_account():
    spec = TOY["wan_toy"]
    dense = dict(ms_step=100.0, calls=[{"density": 1.0, "ms_attend": 30.0}, {"density": 1.0, "ms_attend": 30.0}])
    sparse = dict(ms_step=80.0, ms_step_min=79.0, ms_cold=120.0, finite=True,
                  calls=[{"density": 1.0, "ms_attend": 30.0},
                         {"density": 0.5, "ms_cluster": 2.0, "ms_attend": 13.0}])
    row = summarise("svg2_x", "svg2", sparse, dense, spec, steps=10, warmup_fraction=0.2)
    assert row["ms_ceiling"] == pytest.approx(40 + 30 + 0.5 * 30)  # other + density-weighted dense attention
    assert row["ceiling_fraction"] == pytest.approx(85 / 80)
    assert row["density"] == pytest.approx(0.75) and row["ms_self_attention"] == pytest.approx(45)
    # 2 dense steps, one cold sparse step, 7 warm ones; two CFG branches each.
    assert row["ms_generation"] == pytest.approx(2 * (2 * 100 + 120 + 7 * 80))
    assert row["speedup_generation"] == pytest.approx(1000 / 880)


def test_real_configs_have_the_documented_token_counts():
    tokens = {n: s.video_tokens for n, s in SHAPES.items()}
    assert tokens == {"wan_t2v_1.3b_480p": 32_760, "wan_t2v_14b_720p": 75_600, "wan_i2v_14b_720p": 75_600,
                      "hunyuan_720p": 118_800, "cogvideox_5b_480p": 17_550}
    methods = bench_methods(SHAPES["wan_t2v_14b_720p"], [0.15], ["cudnn", "flash"])
    assert methods["svg2_preset"][1]["num_q_clusters"] == 300
    assert methods["svg2_d0.15"][1]["top_k"] == 150 and methods["positional_d0.15"][1]["top_k"] == 89


def test_aligned_svg2_rows_share_the_budget_of_the_plain_ones():
    methods = bench_methods(SHAPES["wan_t2v_14b_720p"], [0.15], ["cudnn"], presets=(), align_q_tile=64)
    plain, aligned = methods["svg2_d0.15"], methods["svg2_d0.15_a64"]
    assert aligned == ("svg2", dict(plain[1], align_q_tile=64))
    assert "svg2_d0.15_a64" not in bench_methods(SHAPES["wan_t2v_14b_720p"], [0.15], ["cudnn"], presets=())


def test_fewer_layers_keep_the_shape_and_hunyuans_double_to_single_ratio():
    wan = with_layers(SHAPES["wan_t2v_14b_720p"], 6)
    assert (wan.layers, wan.video_tokens, wan.heads) == (6, 75_600, 40)
    hunyuan = with_layers(SHAPES["hunyuan_720p"], 3)
    assert hunyuan.transformer_config["num_layers"] == 1 and hunyuan.transformer_config["num_single_layers"] == 2
    assert hunyuan.layers == 3 and hunyuan.attention_tokens == 118_800 + 256


@pytest.mark.slow
def test_under_torchrun_every_method_runs_over_the_ranks_with_the_single_process_plan(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    args = ["--toy", "--shapes", "wan_toy", "--presets", "", "--densities", "0.25", "--repeats", "1"]
    one = main([*args, "--out", str(tmp_path / "one.csv")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "eval.bench.e2e",
           *args, "--out", str(tmp_path / "two.csv")]
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[3], env=os.environ, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = pd.read_csv(tmp_path / "two.csv")  # rank 0's rows, each with every rank's warm step
    assert two["method"].tolist() == one["method"].tolist() == ["dense_auto", "positional_d0.25", "svg2_d0.25"]
    assert (two["world_size"] == 2).all() and (one["world_size"] == 1).all() and two["finite"].all()
    assert two["density"].tolist() == pytest.approx(one["density"].tolist(), abs=1e-9)
    assert all(len(json.loads(r)) == 2 for r in two["ms_step_ranks"])
