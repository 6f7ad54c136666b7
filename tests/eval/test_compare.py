import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from eval.compare import at_density, interpolate, matched, paired_difference, t_interval, with_curves
from eval.results import load_results
from tests.eval.synthetic_results import write_folder


def rows(curves: dict, items=(("p", 0),)):
    out = []
    for (method, family), points in curves.items():
        for prompt, seed in items:
            for density, err in points:
                out.append(dict(method=method, family=family, family_key=f"{method}/{family}", prompt=prompt,
                                seed=seed, status="ok", reference=False, sparse_density=density, rel_l2=err))
    return pd.DataFrame(out)


def test_curves_are_interpolated_in_log_density_and_never_extrapolated():
    df = rows({("a", "x"): [(0.1, 0.4), (0.4, 0.2)], ("b", "y"): [(0.2, 0.3), (0.8, 0.1)]})
    table = at_density(df, "rel_l2", [0.2, 0.5])
    assert table.loc["a x", 0.2] == pytest.approx(0.3) and table.loc["b y", 0.2] == pytest.approx(0.3)
    assert math.isnan(table.loc["a x", 0.5]) and 0.1 < table.loc["b y", 0.5] < 0.3
    assert interpolate([0.1, 0.4], [1.0, 0.0], 0.2) == pytest.approx(0.5)


def test_a_density_is_missing_when_any_item_does_not_reach_it():
    df = rows({("a", "x"): [(0.1, 0.4), (0.4, 0.2)]}, items=(("p", 0), ("p", 1)))
    df.loc[(df["seed"] == 1) & (df["sparse_density"] == 0.1), "sparse_density"] = 0.3  # seed 1 starts at 0.3
    table = at_density(df, "rel_l2", [0.2, 0.35])
    assert math.isnan(table.loc["a x", 0.2]) and not math.isnan(table.loc["a x", 0.35])


def test_reference_rows_and_failed_rows_are_left_out():
    df = rows({("a", "x"): [(0.1, 0.4), (0.4, 0.2)]})
    extra = pd.DataFrame([dict(method="dense", family="", family_key="d", prompt="p", seed=0, status="ok",
                               reference=True, sparse_density=None, rel_l2=0.0),
                          dict(method="a", family="x", family_key="a/x", prompt="p", seed=0, status="error",
                               reference=False, sparse_density=0.2, rel_l2=9.0)])
    table = at_density(pd.concat([df, extra]), "rel_l2", [0.2])
    assert list(table.index) == ["a x"] and table.loc["a x", 0.2] == pytest.approx(0.3)



def test_t_interval_is_the_95_percent_student_interval_and_absent_for_one_value():
    mean, half, n = t_interval([1.0, 2.0, 3.0, 4.0, np.nan])
    assert (mean, n) == (2.5, 4)
    assert half == pytest.approx(stats.t.ppf(0.975, 3) * np.std([1, 2, 3, 4], ddof=1) / 2)
    assert math.isnan(t_interval([3.0])[1]) and t_interval([3.0])[2] == 1
    assert math.isnan(t_interval([math.inf, math.inf])[1])  # exact PSNR has no interval
    assert t_interval([0.5, 0.5, 0.5])[1] == 0


def test_paired_difference_removes_what_items_share_and_is_deterministic():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 10, size=8)           # items differ by ~10 dB ...
    other = base + 1 + rng.normal(0, 0.1, 8)   # ... the method by 1 dB on every item
    diff, low, high = paired_difference(other, base)
    assert low < diff < high and 0.8 < low and high < 1.2  # an unpaired interval would span tens of dB
    assert paired_difference(other, base) == (diff, low, high)
    assert paired_difference(base + 2, base) == pytest.approx((2, 2, 2))
    d1 = paired_difference([3.0], [1.0])
    assert d1[0] == 2 and math.isnan(d1[1]) and math.isnan(d1[2])


def test_matched_pairs_items_at_each_density_and_never_extrapolates(tmp_path):
    rows = load_results(write_folder(tmp_path).folder)
    table = matched(rows, "psnr", [0.15, 0.25, 0.35]).set_index(["curve", "density"])
    assert set(table["against"]) == {"positional b64"}  # the first family in table order (order 10, then label)
    assert table.loc[("svg2 QC16/KC64", 0.25), "diff"] == pytest.approx(-1.0)
    assert table.loc[("svg2 QC16/KC64", 0.25), ["diff_low", "diff_high"]].tolist() == pytest.approx([-1, -1])
    assert table.loc[("positional tile(1, 8, 8)", 0.35), "diff"] == pytest.approx(0.5)
    assert table.loc[("svg2 QC16/KC64", 0.25), "n_paired"] == 4
    # positional b64 starts at density 0.2: nothing at 0.15, so no difference there either
    assert math.isnan(table.loc[("positional b64", 0.15), "mean"])
    assert math.isnan(table.loc[("svg2 QC16/KC64", 0.15), "diff"])
    assert not math.isnan(table.loc[("svg2 QC16/KC64", 0.15), "mean"])
    assert math.isnan(table.loc[("svg2 QC64/KC256", 0.35), "mean"])  # its budgets end at 0.3
    assert table.loc[("svg2 QC16/KC64", 0.25), "ci95"] > 0 and table.loc[("svg2 QC16/KC64", 0.25), "n"] == 4


def test_matched_against_a_named_family_and_an_unknown_one(tmp_path):
    rows = load_results(write_folder(tmp_path).folder)
    table = matched(rows, "psnr", [0.25], against="svg2 QC64/KC256").set_index("curve")
    assert table.loc["svg2 QC16/KC64", "diff"] == pytest.approx(-2.0)
    assert math.isnan(table.loc["svg2 QC64/KC256", "diff"])  # not against itself
    with pytest.raises(ValueError, match=r"against='svg2'.*expected one of \['positional b64'"):
        matched(rows, "psnr", [0.25], against="svg2")


def test_table_order_comes_from_the_rows_order_column(tmp_path):
    families = [("zeta", "b1", 5, [("p0.5", 0.2), ("p0.9", 0.4)], 0.0),
                ("alpha", "b1", 50, [("p0.5", 0.2), ("p0.9", 0.4)], 1.0)]
    rows = load_results(write_folder(tmp_path, families).folder)
    assert set(matched(rows, "psnr", [0.3])["against"]) == {"zeta b1"}


def test_folders_without_family_columns_get_them_from_the_label():
    old = pd.DataFrame([dict(method="dense", label="dense", density=1.0),
                        dict(method="positional", label="positional b64 p0.6", density=0.3),
                        dict(method="svg2", label="svg2 p0.9", density=0.4)])
    new = with_curves(old)
    assert new["reference"].tolist() == [True, False, False]
    assert new["family"].tolist() == ["", "b64", ""] and new["budget"].tolist() == ["", "p0.6", "p0.9"]
    assert new["curve"].tolist() == ["dense", "positional b64", "svg2"]
