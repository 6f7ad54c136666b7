"""A sweep job over several ranks (``parallel.world_size``): the sweep starts gloo ranks itself, every rank
generates with Ulysses sequence parallelism, rank 0 writes one row per generation with world size and per-rank
timings, and the row's measurements equal the single-process row's."""
import pytest

from eval.results import ResultStore
from tests.eval.conftest import TINY, run_sweep

SVG2 = ["method=svg2", "method.top_p=0.5"]


@pytest.mark.slow
def test_parallel_rows_equal_single_process_rows_and_carry_per_rank_timings(tmp_path, cache_dir):
    run_sweep(*TINY, f"results_dir={tmp_path / 'one'}", f"cache_dir={cache_dir}", "report=false", *SVG2)
    run_sweep(*TINY, f"results_dir={tmp_path / 'two'}", f"cache_dir={cache_dir}", "report=false", *SVG2,
              "parallel.world_size=2")
    (one,), (two,) = ResultStore(tmp_path / "one").rows(), ResultStore(tmp_path / "two").rows()
    assert one["status"] == two["status"] == "ok"
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["key"] != two["key"]  # a parallel row is its own measurement; it never stands in for the other
    for col in ("psnr", "ssim", "lpips", "density", "sparse_density", "flops", "calls", "kmeans_iters"):
        assert two[col] == pytest.approx(one[col], rel=1e-5, abs=1e-9), col
    assert two["sparse_density"] < 1
    for col in ("e2e_ms_ranks", "step_ms_ranks", "step_ms_dense_ranks"):
        assert len(two[col]) == 2 and all(t > 0 for t in two[col]) and len(one[col]) == 1, col
    assert two["e2e_ms"] == two["e2e_ms_ranks"][0]  # the row's own timings are rank 0's
    # one row per generation: rank 0 alone wrote the rows and the comparison GIF
    assert len(list((tmp_path / "two" / "rows").glob("*.json"))) == 1
    assert len(list((tmp_path / "two" / "frames").glob("*.gif"))) == 1


@pytest.mark.parametrize("overrides,message", [
    (["parallel.world_size=4"], "2 attention heads do not split over 4 ranks"),  # the tiny Wan has 2 heads
    (["parallel.world_size=0"], "parallel.world_size=0; expected a rank count >= 1"),
    (["parallel.world_size=2", "workload=attention"], "sequence parallelism runs generations"),
    (["parallel.world_size=2", "device=cuda:1"], "expected device=auto, cuda or cpu"),
])
def test_bad_parallel_setups_fail_before_any_rank_starts(overrides, message, tmp_path, cache_dir, monkeypatch):
    import eval.ranks

    monkeypatch.setattr(eval.ranks, "spawn", lambda *a: pytest.fail("ranks were started"))
    if "device=cuda:1" in overrides:
        monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # so that it passes resolve_device
    tiny = [o for o in TINY if "warmup_steps" not in o] if "workload=attention" in overrides else TINY
    with pytest.raises(ValueError, match=message):
        run_sweep(*tiny, f"results_dir={tmp_path}", f"cache_dir={cache_dir}", *SVG2, *overrides)
    assert not (tmp_path / "rows").exists()
