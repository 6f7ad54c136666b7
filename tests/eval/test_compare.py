import math

import pandas as pd
import pytest

from eval.compare import at_density, interpolate


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
