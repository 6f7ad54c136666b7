"""Methods compared at matched density: each method config family's budget curve (its configs that differ only in
the budget: top_p, top_k, ...) is interpolated, per item (prompt, seed), at chosen densities, in log-density; a
density outside the range a curve's budgets reached is missing ("—"), never extrapolated.

    from eval.compare import at_density
    at_density(rows, "rel_l2", [0.2, 0.3], x="density")   # one row per curve, one column per density
"""
from __future__ import annotations

import numpy as np
import pandas as pd

ITEM = ["prompt", "seed"]


def curve_label(rows: pd.DataFrame) -> pd.Series:
    """'<method> <family>' of each row (the curve it lies on)."""
    family = rows["family"].fillna("").astype(str) if "family" in rows else pd.Series("", index=rows.index)
    return (rows["method"].astype(str) + " " + family).str.strip()


def interpolate(x, y, at: float) -> float:
    """y at density ``at`` along the points (x, y), linear in log(x); NaN outside [min x, max x]."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & (x > 0)
    x, y = x[keep], y[keep]
    if len(x) == 0 or not x.min() <= at <= x.max():
        return float("nan")
    order = np.argsort(x, kind="stable")
    return float(np.interp(np.log(at), np.log(x[order]), y[order]))


def item_curves(rows: pd.DataFrame, metric: str, densities, x: str) -> pd.DataFrame:
    """One row per (curve, item): the metric interpolated at each density (columns), from that item's rows."""
    rows = rows[(rows["status"] == "ok") if "status" in rows else slice(None)]
    rows = rows[~rows.get("reference", pd.Series(False, index=rows.index)).fillna(False).astype(bool)]
    if rows.empty:
        return pd.DataFrame()
    key = rows["family_key"] if "family_key" in rows else curve_label(rows)
    out = []
    for (fam, *item), part in rows.assign(_curve=key).groupby(["_curve", *ITEM], sort=True):
        values = {d: interpolate(part[x].to_numpy(float), part[metric].to_numpy(float), d) for d in densities}
        out.append({"curve": curve_label(part).iloc[0], "order": part["order"].iloc[0] if "order" in part else 0,
                    **dict(zip(ITEM, item)), **values})
    return pd.DataFrame(out)


def at_density(rows: pd.DataFrame, metric: str, densities, x: str = "sparse_density") -> pd.DataFrame:
    """Mean over items of each curve's metric at each density; missing where any item's curve does not reach it
    (so every number is over the same items)."""
    per_item = item_curves(rows, metric, densities, x)
    if per_item.empty:
        return pd.DataFrame(columns=list(densities))
    cols = list(densities)
    grouped = per_item.groupby(["order", "curve"], sort=True)[cols]
    mean = grouped.mean().where(~grouped.apply(lambda g: g.isna().any()), np.nan)
    return mean.reset_index(level="order", drop=True)
