import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.container import ErrorbarContainer

from eval.compare import t_interval
from eval.frontier import (format_interval, format_range, frontier_figure, frontier_table, load_configs,
                           markdown_table, pareto_mask, plot_frontiers, report)
from eval.results import ResultStore
from tests.eval.synthetic_results import ITEMS, write_folder

matplotlib.use("Agg")


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


def test_configs_carry_a_t_interval_over_their_rows(tmp_path):
    write_folder(tmp_path)
    configs = load_configs(tmp_path).set_index("label")
    row = configs.loc["svg2 QC16/KC64 p0.7"]
    rows = ResultStore(tmp_path).frame()
    psnr = rows.loc[rows["label"] == "svg2 QC16/KC64 p0.7", "psnr"]
    assert row["rows"] == len(ITEMS) and row["psnr_ci95"] == pytest.approx(t_interval(psnr)[1])
    assert np.isnan(configs.loc["dense", "psnr_ci95"])  # exact: no interval
    write_folder(tmp_path / "one", items=ITEMS[:1])
    assert load_configs(tmp_path / "one")["psnr_ci95"].isna().all()  # n = 1: none


def _figure(folder, **kw):
    write_folder(folder, **kw)
    return frontier_figure(load_configs(folder), ["psnr", "ssim"], ["density", "speedup_e2e"])


def test_figure_has_a_title_budget_labels_and_a_colour_per_method_and_marker_per_family(tmp_path):
    fig = _figure(tmp_path)
    assert "model: m" in fig.get_suptitle()
    ax = fig.axes[0]
    assert {"p0.5", "p0.7", "p0.9"} <= {t.get_text() for t in ax.texts}
    legend = {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    assert list(legend) == ["dense (exact)", "positional b64", "positional tile(1, 8, 8)", "svg2 QC16/KC64",
                            "svg2 QC64/KC256"]
    colour = {k: h.get_color() for k, h in legend.items()}
    marker = {k: h.get_marker() for k, h in legend.items()}
    assert colour["positional b64"] == colour["positional tile(1, 8, 8)"] != colour["svg2 QC16/KC64"]
    assert colour["svg2 QC16/KC64"] == colour["svg2 QC64/KC256"]
    assert marker["positional b64"] != marker["positional tile(1, 8, 8)"]
    assert marker["svg2 QC16/KC64"] != marker["svg2 QC64/KC256"]
    assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)  # per-config intervals


def test_colours_follow_the_rows_order_not_the_method_names(tmp_path):
    families = [("zeta", "b1", 5, [("p0.5", 0.2), ("p0.9", 0.4)], 0.0),
                ("alpha", "b1", 50, [("p0.5", 0.2), ("p0.9", 0.4)], 1.0)]
    fig = _figure(tmp_path, families=families)
    legend = {t.get_text(): h.get_color() for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    assert list(legend)[1:] == ["zeta b1", "alpha b1"]
    assert matplotlib.colors.same_color(legend["zeta b1"], "C0")


def test_infinite_psnr_of_the_reference_is_stated_not_drawn(tmp_path):
    fig = _figure(tmp_path)
    psnr_ax, ssim_ax = fig.axes[0], fig.axes[2]  # rows: psnr, ssim; columns: density, speedup
    assert psnr_ax.get_ylabel().startswith("PSNR") and ssim_ax.get_ylabel() == "SSIM"
    assert any("dense: exact, PSNR = ∞" in t.get_text() for t in psnr_ax.texts)
    top = max(off[1] for coll in psnr_ax.collections for off in coll.get_offsets())
    assert top < 30  # no point parked above the sparse configs
    stars = [c.get_offsets() for c in ssim_ax.collections if len(c.get_offsets()) == 1]
    assert any(np.allclose(o[0], (1.0, 1.0)) for o in stars)  # SSIM 1 is finite: drawn where it is
    assert not any("SSIM = ∞" in t.get_text() for t in ssim_ax.texts)


def test_cpu_time_ratios_written_by_several_processes_say_so(tmp_path):
    one = _figure(tmp_path / "one", timer="cpu_wall")
    assert "processes" not in one.axes[1].get_xlabel() and "CPU wall clock" in one.axes[1].get_xlabel()
    writers = [("hostA", 1), ("hostA", 1), ("hostB", 7), ("hostA", 2)]
    many = _figure(tmp_path / "many", timer="cpu_wall", writers=writers)
    assert "3 processes" in many.axes[1].get_xlabel() and "processes" not in many.axes[0].get_xlabel()
    assert any("measured by 3 processes" in t.get_text() for t in many.texts)
    gpu = _figure(tmp_path / "gpu", writers=writers)
    assert "processes" not in gpu.axes[1].get_xlabel()  # CUDA events: each ratio is of one process anyway


def test_report_writes_intervals_and_paired_differences(tmp_path):
    write_folder(tmp_path)
    plot, text = report(tmp_path, {"quality": ["psnr"], "cost": ["density"], "matched_density": [0.15, 0.25]})
    assert plot.is_file() and (tmp_path / "frontier.md").read_text() == text + "\n"
    assert "| method | label | psnr | density |" in text and " ± " in text
    assert "Paired difference against positional b64" in text
    assert "| svg2 QC16/KC64 | 4 | — | -1 [-1, -1] |" in text  # at 0.15 the family it is paired with has no value
    plot, text = report(tmp_path, {"quality": ["psnr"], "cost": ["density"], "matched_density": [0.25],
                                   "against": "svg2 QC64/KC256"})
    assert "Paired difference against svg2 QC64/KC256" in text
    plot, text = report(tmp_path, {"quality": ["psnr"], "cost": ["density"], "matched_density": [0.25],
                                   "against": "svg2 QC64"})
    assert plot.is_file() and "metrics.frontier.against='svg2 QC64' is not a method family" in text


def test_numbers_are_shown_to_the_precision_of_their_interval():
    assert format_interval(16.3054, 5.7226) == "16.3 ± 5.7"
    assert format_interval(0.2635, 0.0447) == "0.264 ± 0.045"
    assert format_interval(19.9487, 24.04) == "19.9 ± 24.0"
    assert format_interval(17.9, float("nan")) == "17.9" and format_interval(float("inf"), float("nan")) == "inf"
    assert format_range(-1.81386, -2.73867, -0.889058) == "-1.81 [-2.74, -0.89]"
    assert format_range(float("nan"), 0, 1) == "—" and format_range(2.0, float("nan"), float("nan")) == "2"
    import pandas as pd

    table = pd.DataFrame({"m": ["a"], "psnr": [16.3054], "psnr ±95%": [5.7226], "n": [2]})
    assert markdown_table(table).splitlines()[0] == "| m | psnr | n |"
    assert "| a | 16.3 ± 5.7 | 2 |" in markdown_table(table)
