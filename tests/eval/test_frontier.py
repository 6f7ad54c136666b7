import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.frontier import frontier_table, load_configs, pareto_mask, plot_frontiers
from eval.results import ResultStore


def test_pareto_mask_on_a_known_set():
    # (speedup, psnr): higher is better on both
    x = [1.0, 2.0, 3.0, 2.5, 1.5, np.nan]
    y = [40., 35., 20., 30., 30., 50.]
    assert pareto_mask(x, y, True, True).tolist() == [True, True, True, True, False, False]
    # density is better lower: the same points read against density
    assert pareto_mask([1.0, 0.5, 0.5], [40., 30., 35.], False, True).tolist() == [True, False, True]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=25), st.booleans(),
       st.booleans())
def test_frontier_is_exactly_the_non_dominated_set(points, x_higher, y_higher):
    x, y = (np.array(v, dtype=float) for v in zip(*points))
    mask = pareto_mask(x, y, x_higher, y_higher)
    sx, sy = (x if x_higher else -x), (y if y_higher else -y)
    for i in range(len(x)):
        dominated = any(sx[j] >= sx[i] and sy[j] >= sy[i] and (sx[j] > sx[i] or sy[j] > sy[i]) for j in range(len(x)))
        assert mask[i] == (not dominated)
    assert mask.any()  # a finite set always has a non-dominated point


def _rows(folder):
    store = ResultStore(folder)
    for i, (method, p, psnr, speed) in enumerate([("dense", None, np.inf, 1.0), ("svg2", 0.9, 30.0, 1.5),
                                                  ("svg2", 0.9, 32.0, 1.7), ("svg2", 0.5, 25.0, 2.5),
                                                  ("positional", 0.9, 24.0, 1.4)]):
        store.write(f"k{i}", dict(sweep="t", model="m", workload="video", hardware="H200", method=method,
                                  label=f"{method} p{p}", status="ok", psnr=psnr, speedup_e2e=speed,
                                  density=1.0 if p is None else p / 2, timer="cuda_events", prompt=f"p{i % 2}"))
    store.write("bad", dict(sweep="t", model="m", workload="video", hardware="H200", method="svg2", label="svg2 p0.1",
                            status="error", error="ValueError: boom"))
    store.combine()
    return store


def test_configs_average_prompts_and_drop_failed_rows(tmp_path):
    _rows(tmp_path)
    configs = load_configs(tmp_path).set_index("label")
    assert configs.loc["svg2 p0.9", "psnr"] == 31.0 and configs.loc["svg2 p0.9", "rows"] == 2
    assert "svg2 p0.1" not in configs.index


def test_frontier_table_and_figure(tmp_path):
    _rows(tmp_path)
    configs = load_configs(tmp_path)
    table = frontier_table(configs, "psnr", "speedup_e2e").set_index("label")
    assert table["frontier"].to_dict() == {"svg2 p0.5": True, "svg2 p0.9": True, "positional p0.9": False,
                                           "dense pNone": True}
    path = plot_frontiers(configs, ["psnr"], ["speedup_e2e", "density"], tmp_path / "f.png")
    assert path.stat().st_size > 5_000


def test_configurations_sharing_a_label_are_told_apart(tmp_path):
    store = ResultStore(tmp_path)
    for i, iters in enumerate([1, 2, 2]):
        store.write(f"k{i}", dict(sweep="t", model="m", workload="video", hardware="cpu", method="svg2",
                                  label="svg2 p0.9", config_key=f"c{iters}", status="ok", psnr=30.0 + i,
                                  **{"method.kmeans_iters_step": iters, "method.top_p": 0.9}))
    configs = load_configs(tmp_path).set_index("label")
    assert sorted(configs.index) == ["svg2 p0.9 kmeans_iters_step=1", "svg2 p0.9 kmeans_iters_step=2"]
    assert configs.loc["svg2 p0.9 kmeans_iters_step=2", "psnr"] == 31.5
