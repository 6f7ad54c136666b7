import math
import re

import pandas as pd
import pytest

from eval.config import method_configs
from eval.reproduce import paper_tables
from eval.results import ResultStore
from svg2.methods import build_method
from tests.eval.conftest import TINY, compose_config, run_cli, run_sweep

QUICK_METHODS = 6  # conf/sweep/quick.yaml


def test_default_sweep_writes_rows_table_figure_and_gifs(quick_results):
    folder, proc = quick_results
    assert "frontier plot:" in proc.stdout and str(folder / "frontier.png") in proc.stdout
    assert "| method | label | psnr |" in proc.stdout  # the frontier table
    df = pd.read_csv(folder / "results.csv")
    assert len(df) == QUICK_METHODS and (df["status"] == "ok").all()
    assert set(df["method"]) == {"dense", "positional", "svg2"}
    assert len(pd.read_parquet(folder / "results.parquet")) == QUICK_METHODS
    for col in ("method.top_p", "method.num_q_clusters", "workload.steps", "prompt", "seed", "psnr", "ssim", "lpips",
                "density", "flops", "flops_ratio", "e2e_ms", "e2e_ms_dense", "speedup_e2e", "ms_cluster", "ms_attend",
                "timer", "hardware", "torch", "diffusers", "commit"):
        assert col in df, col
    assert (df["timer"] == "cpu_wall").all()
    dense = df[df["method"] == "dense"].iloc[0]
    assert math.isinf(dense["psnr"]) and dense["density"] == 1 and dense["flops_ratio"] == 1
    svg2 = df[df["method"] == "svg2"]
    assert (svg2["density"] < 1).all() and (svg2["flops"] < dense["flops"]).all()
    # a tighter budget keeps fewer blocks
    by_p = svg2.set_index("method.top_p")["sparse_density"]
    assert by_p[0.5] < by_p[0.8] < by_p[0.95]
    assert all((folder / "frames" / f"{k}.gif").is_file() for k in df["key"])
    assert (folder / "frontier.png").stat().st_size > 10_000 and (folder / "frontier.md").is_file()


def test_rerun_skips_finished_rows_and_recomputes_lost_ones(quick_results, cache_dir):
    folder, _ = quick_results
    store = ResultStore(folder)
    rows = {r["key"]: r for r in store.rows()}
    lost = sorted(rows)[0]
    store.path(lost).unlink()  # as if the sweep had been interrupted before this row
    run_sweep(*TINY, f"results_dir={folder}", f"cache_dir={cache_dir}")
    after = {r["key"]: r for r in store.rows()}
    assert set(after) == set(rows)
    for key, row in rows.items():
        same = after[key]["finished_at"] == row["finished_at"]
        assert same == (key != lost), key


def test_failing_row_records_error_and_sweep_goes_on(tmp_path, cache_dir, monkeypatch):
    from svg2.methods import SVG2Method

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(SVG2Method, "plan", out_of_memory)
    methods = "[{name: svg2}, {name: dense}]"
    summary = run_sweep(*TINY, f"results_dir={tmp_path}", f"cache_dir={cache_dir}", f"sweep.methods={methods}")
    rows = {r["method"]: r for r in ResultStore(tmp_path).rows()}
    assert rows["svg2"]["status"] == "error" and "out of memory (simulated)" in rows["svg2"]["error"]
    assert rows["dense"]["status"] == "ok" and summary.objective == math.inf and summary.failed == 1
    df = pd.read_csv(tmp_path / "results.csv")
    assert set(df["status"]) == {"ok", "error"}


def test_shape_errors_stop_before_any_weights_load(tmp_path, cache_dir, monkeypatch):
    from eval.models import ModelConfig

    monkeypatch.setattr(ModelConfig, "load", lambda *a: pytest.fail("the pipeline was loaded"))
    with pytest.raises(ValueError, match="num_q_clusters=100000 exceeds the sequence length S=48"):
        run_sweep(*TINY, f"results_dir={tmp_path}", f"cache_dir={cache_dir}", "method=svg2",
                  "method.num_q_clusters=100000")
    assert not (tmp_path / "rows").exists()


def test_config_error_stops_before_any_generation(tmp_path, cache_dir):
    with pytest.raises(ValueError, match=r"top_p=1.5 is outside \(0, 1\]"):
        run_sweep(*TINY, f"results_dir={tmp_path}", f"cache_dir={cache_dir}", "method=svg2", "method.top_p=1.5")
    assert not (tmp_path / "rows").exists()


def test_single_method_override_runs_only_that_method(tmp_path, cache_dir):
    run_sweep(*TINY, f"results_dir={tmp_path}", f"cache_dir={cache_dir}", "method=positional", "method.top_p=0.6")
    (row,) = ResultStore(tmp_path).rows()
    assert row["method"] == "positional" and row["method.top_p"] == 0.6 and row["status"] == "ok"
    assert row["method.block_size"] == 8  # from the model's recommendation (conf/model/tiny.yaml)


# Each baseline with knobs that fit the tiny model's 48-token 3 x 4 x 4 grid (their defaults are for real models).
BASELINES_ON_TINY = {
    "svg1": dict(round_to=4, block_size=8),
    "sta": dict(tile=[1, 2, 2], window=[3, 1, 1]),
    "radial": dict(block_size=4, decay_factor=0.5),
    "xattention": dict(stride=2, block_size=8, threshold=0.5),
    "sparge": dict(block_q=8, block_k=8, topk=0.5),
    "draft": dict(pool_h=2, pool_w=2, sparsity=0.75),
}


@pytest.mark.parametrize("name", BASELINES_ON_TINY)
def test_every_baseline_runs_through_the_sweep(name, tmp_path, cache_dir):
    knobs = BASELINES_ON_TINY[name]
    overrides = [f"method.{k}={v}".replace(" ", "") for k, v in knobs.items()]
    run_sweep(*TINY, f"results_dir={tmp_path}", f"cache_dir={cache_dir}", "raise_errors=true", f"method={name}",
              *overrides)
    (row,) = ResultStore(tmp_path).rows()
    method = build_method(name, **knobs)  # its label names the knobs, so the row's label says they arrived
    assert row["status"] == "ok" and 0 < row["sparse_density"] <= 1 and not row["reference"]
    assert (row["method"], row["label"], row["order"]) == (name, method.config.label(), method.order)
    assert row["family"] == method.config.family()


def test_a_budget_curve_of_a_sequence_knob_is_a_list_of_sequences():
    def windows(methods):
        return [m["window"] for m in method_configs(compose_config(f"sweep.methods={methods}"))]

    assert windows("[{name: sta, window: [3, 3, 5]}]") == [[3, 3, 5]]  # one window: one config
    assert windows("[{name: sta, window: [[1, 3, 3], [3, 3, 5]]}]") == [[1, 3, 3], [3, 3, 5]]
    configs = method_configs(compose_config("sweep.methods=[{name: svg1, sparsity: [0.1, 0.25]}]"))
    assert [m["sparsity"] for m in configs] == [0.1, 0.25]


@pytest.mark.parametrize("experiment,extra", [
    ("svg2_knobs", []),
    ("attention_captured", ["workload.capture_steps=[0,1]"]),
    ("attention_synthetic", ["workload.shape=null", "workload.grid=[3,8,8]", "workload.dtype=float32",
                             "model.clusters.q=8", "model.clusters.k=16", "model.block_size=16",
                             "workload.repeats=1", "workload.warmup=0"]),
])
def test_every_experiment_runs_at_tiny_budget(experiment, extra, tmp_path, cache_dir):
    tiny = TINY if experiment == "svg2_knobs" else [o for o in TINY if "warmup_steps" not in o]
    run_sweep(*tiny, f"experiment={experiment}", f"results_dir={tmp_path}", f"cache_dir={cache_dir}", *extra)
    rows = ResultStore(tmp_path).rows()
    assert rows and all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    if experiment.startswith("attention"):
        dense = [r for r in rows if r["method"] == "dense"]
        assert dense[0]["rel_l2"] < 1e-6
        sparse = [r for r in rows if r["method"] == "svg2"]
        assert all(0 < r["rel_l2"] < 1 and r["density"] < 1 for r in sparse)
        ((title, table),) = paper_tables(tmp_path)
        assert "workload: attention" in title
        values = [c for c in table.columns if not c.endswith("±95%") and c != "n"]
        assert values == ["method", "rel. L2", "cos. error", "density", "FLOPs ratio", "attn. speedup (CPU time ratio)"]


def test_paper_preset_runs_on_a_tiny_pipeline_of_its_kind(tmp_path, cache_dir):
    from svg2.diffusers import build_tiny_pipeline

    path = cache_dir / "models" / "tiny_wan_t2v"
    if not (path / "model_index.json").is_file():
        build_tiny_pipeline("wan_t2v", path)
    run_sweep("sweep=wan_t2v_720p_script", f"model.path={path}", "model.height=64", "model.width=64", "model.frames=9",
              "model.clusters.q=8", "model.clusters.k=16", "model.block_size=8", "model.dtype=float32",
              "workload.num_prompts=1", "workload.steps=5", "workload.warmup_steps=0", "progress=false",
              f"results_dir={tmp_path}", f"cache_dir={cache_dir}")
    rows = ResultStore(tmp_path).rows()
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    svg2 = next(r for r in rows if r["method"] == "svg2")
    assert svg2["method.upstream"] and svg2["method.share_cfg_state"] and svg2["method.dense_rounding"] == "floor"
    # dense warm-up: floor(20% of 5 steps) = 1 step and layer 0 of 2 layers run dense, both CFG branches
    calls = svg2["per_call"]
    assert len(calls) == 5 * 2 * 2
    assert [c["ran_dense"] for c in calls] == [c["step"] < 1 or c["layer"] < 1 for c in calls]
    assert svg2["model"] == "wan2.1-t2v-14b" and svg2["flops"] > 0


def test_reproduce_prints_markdown_and_csv(quick_results):
    folder, _ = quick_results
    proc = run_cli(str(folder), module="eval.reproduce")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # (the rerun test above wrote one of the rows from another process: the header then says how many measured them)
    assert re.search(r"\| method \| PSNR \| SSIM \| LPIPS \| density \| MFLOPs \| speedup \(CPU time ratio"
                     r"(, \d processes)?\) \| n \|", proc.stdout)
    assert "not speedups of the method" in proc.stdout
    table = pd.read_csv(folder / "table.csv")
    assert len(table) == QUICK_METHODS and table["method"].iloc[0] == "dense"


def test_dense_reference_is_cached_per_model_prompt_seed_steps_and_resolution(tmp_path, monkeypatch):
    from eval.workloads.video import DenseReferences, VideoWorkload

    cache = tmp_path / "cache"
    generated = []
    original = VideoWorkload.generate
    monkeypatch.setattr(VideoWorkload, "generate",
                        lambda self, pipe, method, *a: generated.append(method.name) or original(self, pipe, method, *a))

    def sweep(*extra):
        monkeypatch.setattr(DenseReferences, "_open", {})  # a new process: nothing timed in memory
        run_sweep(*TINY, "method=positional", "metrics.time_dense=false", f"results_dir={tmp_path / 'r'}",
                  f"cache_dir={cache}", *extra)

    sweep()
    assert generated == ["dense", "positional"] and len(list((cache / "references").glob("*.pt"))) == 1
    sweep("method.top_p=0.5")  # another method config: the reference comes from disk
    assert generated[2:] == ["positional"]
    sweep("workload.steps=3")  # another step count: another reference
    assert generated[3:] == ["dense", "positional"] and len(list((cache / "references").glob("*.pt"))) == 2


def test_warmup_generation_runs_the_sparse_calls_it_warms(tmp_path, monkeypatch, cache_dir):
    # under the default 25 % dense steps a one-step warm-up would be all dense, and the sparse kernels would
    # compile inside the timed generation; the warm-up runs a copy of the method without dense steps
    import svg2.diffusers

    installed = []
    original = svg2.diffusers.apply
    monkeypatch.setattr(svg2.diffusers, "apply", lambda pipe, method, **kw: installed.append(method)
                        or original(pipe, method, **kw))
    tiny = [o for o in TINY if "warmup_steps" not in o]
    run_sweep(*tiny, "method=svg2", "method.top_p=0.9", "workload.warmup_steps=1", "metrics.time_dense=false",
              f"results_dir={tmp_path / 'r'}", f"cache_dir={cache_dir}")
    warm, timed = [m for m in installed if m.name == "svg2"]
    assert warm is not timed and timed.config.dense_steps == 0.25 and warm.config.dense_steps == 0
    assert any(not s.ran_dense for s in warm.stats)  # the warm-up planned and ran sparse calls
    # the timed generation keeps its own protocol: its first step dense, the next one sparse
    assert all(s.ran_dense for s in timed.stats if s.step == 0) and any(not s.ran_dense for s in timed.stats)


@pytest.mark.parametrize("sweep,kind,extra", [
    ("hunyuan_720p_script", "hunyuan", ["model.height=32", "model.width=32",
                                        "+model.call_kwargs.max_sequence_length=16",
                                        "+model.call_kwargs.prompt_template.template='{}'",
                                        "+model.call_kwargs.prompt_template.crop_start=0"]),
    ("wan_i2v_480p_script", "wan_i2v", ["model.height=64", "model.width=64"]),
    ("quick", "cogvideox", ["model=cogvideox", "model.height=64", "model.width=64",
                            "+model.call_kwargs.max_sequence_length=16", "sweep.methods=[{name: dense}, "
                            "{name: svg2, top_p: 0.9}, {name: svg2, top_p: 0.75}, {name: positional, top_p: 0.9}]"]),
])
def test_hunyuan_i2v_and_cogvideox_run_through_the_harness_on_tiny_pipelines(sweep, kind, extra, tmp_path, cache_dir):
    # The HunyuanVideo and Wan I2V reference-script presets (prompt tokens in Hunyuan's joint attention stay dense;
    # an image conditions I2V; both cluster during the warm-up, with one cache for both CFG branches) and
    # CogVideoX (prompt tokens first) through the harness a user runs on real weights.
    from PIL import Image

    from svg2.diffusers import build_tiny_pipeline

    path = cache_dir / "models" / f"tiny_{kind}"
    if not (path / "model_index.json").is_file():
        build_tiny_pipeline(kind, path)
    image = tmp_path / "first_frame.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(image)
    run_sweep(f"sweep={sweep}", f"model.path={path}", f"model.image={image}", "model.frames=9",
              "model.clusters.q=4", "model.clusters.k=8", "model.block_size=8", "model.dtype=float32", *extra,
              "workload.num_prompts=1", "workload.steps=5", "workload.warmup_steps=0", "progress=false",
              f"results_dir={tmp_path / 'results'}", f"cache_dir={cache_dir}")
    rows = ResultStore(tmp_path / "results").rows()
    assert len(rows) == (4 if sweep == "quick" else 2) and all(r["status"] == "ok" for r in rows), [
        r.get("error") for r in rows]
    sparse = [r for r in rows if r["method"] != "dense"]
    assert all(0 < r["sparse_density"] <= 1 and math.isfinite(r["psnr"]) for r in sparse)
    assert all(r["flops"] > 0 for r in rows)
