"""Uncertainty and matched-density comparison of result rows.

Rows share their items (prompt, seed), so methods are compared item by item: each method family's budget curve
(its configs that differ only in the budget: top_p, top_k, ...) is interpolated per item at chosen sparse densities,
in log-density; a density outside the range a curve's budgets reached is missing ("—"), never extrapolated. Means
get a 95 % t-interval over items; differences against one family are paired by item, with a bootstrap interval.

    from eval.compare import at_density, matched
    at_density(rows, "rel_l2", [0.2, 0.3])             # one row per curve, one column per density
    matched(rows, "psnr", [0.15, 0.25], against=None)  # tidy: mean, t-interval, paired difference and its interval
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

ITEM = ["prompt", "seed"]
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0  # fixed: the same rows give the same intervals on every run


def t_interval(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95 % t-interval, n) over the non-missing values; the half-width is NaN with one
    value or an infinite mean (exact PSNR), 0 when every value is equal."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), 0
    mean = float(v.mean())
    if n < 2 or not np.isfinite(mean):
        return mean, float("nan"), n
    sem = float(v.std(ddof=1)) / np.sqrt(n)
    return mean, float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sem), n


def paired_difference(a, b, seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(mean of a - b, low, high): the bootstrap 95 % interval of the mean paired difference (items resampled
    together); no interval (NaN) with one item, a point interval when every difference is equal."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(np.mean(a - b))
    if len(a) < 2 or not np.isfinite(diff):
        return diff, float("nan"), float("nan")
    if np.allclose(a - b, diff, rtol=1e-12, atol=1e-12):  # BCa is undefined for a constant sample: a point
        return diff, diff, diff

    def interval(**method):  # each from the same seed
        return stats.bootstrap((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), paired=True, vectorized=True,
                               confidence_level=CONFIDENCE, rng=np.random.default_rng(seed),
                               **method).confidence_interval

    with warnings.catch_warnings():
        # BCa needs a non-degenerate jackknife; on a few items it can fail (a warning and NaN): percentile then
        warnings.simplefilter("ignore")
        low, high = interval()
    if not (np.isfinite(low) and np.isfinite(high)):
        low, high = interval(method="percentile")
    return diff, float(low), float(high)


def with_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with the columns comparisons and plots read: ``reference``, ``order``, ``family``, ``budget`` (the
    budget part of the label, e.g. 'p0.9'), ``curve`` ('<method> <family>', the budget curve a row lies on) and
    ``curve_key``. Folders written before rows carried reference/order/family/family_key get them derived from
    what they do carry: the reference is the config at density 1, the family the label's words between the
    method and its last word (the budget)."""
    rows = rows.copy()
    method = rows["method"].astype(str)
    label = rows["label"].astype(str) if "label" in rows else method
    at_one = rows["density"].eq(1) if "density" in rows else pd.Series(False, index=rows.index)
    ref = rows["reference"] if "reference" in rows else pd.Series(np.nan, index=rows.index)
    rows["reference"] = ref.where(ref.notna(), at_one).astype(bool)
    order = rows["order"] if "order" in rows else pd.Series(np.nan, index=rows.index)
    rows["order"] = order.where(order.notna(), np.where(rows["reference"], 0, 100)).astype(float)
    words = [lab[len(m):].split() if lab.startswith(m) else lab.split()[1:] for lab, m in zip(label, method)]
    derived = pd.Series([" ".join(w[:-1]) for w in words], index=rows.index)
    family = rows["family"] if "family" in rows else pd.Series(np.nan, index=rows.index)
    rows["family"] = family.where(family.notna(), derived).astype(str)
    rows["budget"] = [_budget_part(lab, m, f) for lab, m, f in zip(label, method, rows["family"])]
    rows["curve"] = (method + " " + rows["family"]).str.strip()
    key = rows["family_key"] if "family_key" in rows else pd.Series(np.nan, index=rows.index)
    rows["curve_key"] = key.where(key.notna(), rows["curve"]).astype(str)
    return disambiguate(rows, "curve", "curve_key")


def _budget_part(label: str, method: str, family: str) -> str:
    head = f"{method} {family}".strip()
    if label == head or not label.startswith(head):
        return ""
    return label[len(head):].strip()


def disambiguate(frame: pd.DataFrame, name: str, key: str) -> pd.DataFrame:
    """Values of ``name`` shared by several ``key``s get appended the method values (``method.<field>``) that are
    fixed within each key and tell the keys apart, e.g. 'svg2 QC16/KC64 kmeans_iters_step=1'."""
    if key not in frame:
        return frame
    frame = frame.copy()
    for value, part in frame.groupby(name, sort=False):
        if part[key].nunique() < 2:
            continue
        keyed = part.groupby(key)
        varying = [c for c in part.columns if c.startswith("method.") and part[c].astype(str).nunique() > 1
                   and (keyed[c].agg(lambda s: s.astype(str).nunique()) == 1).all()]
        for _, sub in keyed:
            first = sub.iloc[0]
            frame.loc[sub.index, name] = f"{value} " + " ".join(f"{c[len('method.'):]}={first[c]}" for c in varying)
    return frame


def interpolate(x, y, at: float) -> float:
    """y at density ``at`` along the points (x, y), linear in log(x); NaN outside [min x, max x]."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & (x > 0)
    x, y = x[keep], y[keep]
    if len(x) == 0 or not x.min() <= at <= x.max():
        return float("nan")
    order = np.argsort(x, kind="stable")
    return float(np.interp(np.log(at), np.log(x[order]), y[order]))


def sparse_curve_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The finished rows of the sparse configs (the reference's left out) with their curves (``with_curves``);
    the finished rows as they are where there are none."""
    if "status" in rows:
        rows = rows[rows["status"] == "ok"]
    if rows.empty:
        return rows
    rows = with_curves(rows)
    return rows[~rows["reference"]]


def check_against(against: str, known: list[str]) -> None:
    """ValueError unless ``against`` is one of the curve labels ``known``."""
    if against not in known:
        raise ValueError(f"against={against!r} is not a method family of these rows; expected one of {known}")


def item_curves(rows: pd.DataFrame, metric: str, densities, x: str = "sparse_density") -> pd.DataFrame:
    """One row per (curve, item): the metric interpolated at each density (columns), from that item's rows."""
    if metric not in rows or x not in rows:
        return pd.DataFrame()
    rows = sparse_curve_rows(rows)
    if rows.empty:
        return pd.DataFrame()
    out = []
    for (_, *item), part in rows.groupby(["curve_key", *ITEM], sort=True, dropna=False):
        values = {d: interpolate(part[x].to_numpy(float), part[metric].to_numpy(float), d) for d in densities}
        out.append({"curve": part["curve"].iloc[0], "order": part["order"].iloc[0], **dict(zip(ITEM, item)),
                    **values})
    return pd.DataFrame(out)


def curves_in_order(per_item: pd.DataFrame) -> list[str]:
    """Curve labels in table order (the methods' ``order``, then the label)."""
    pairs = per_item[["order", "curve"]].drop_duplicates().sort_values(["order", "curve"])
    return list(dict.fromkeys(pairs["curve"]))


def at_density(rows: pd.DataFrame, metric: str, densities, x: str = "sparse_density") -> pd.DataFrame:
    """Mean over items of each curve's metric at each density; missing where any item's curve does not reach it
    (so every number is over the same items)."""
    table = matched(rows, metric, densities, x=x)
    if table.empty:
        return pd.DataFrame(columns=list(densities))
    wide = table.pivot(index="curve", columns="density", values="mean")
    return wide.loc[table["curve"].drop_duplicates(), list(densities)].rename_axis(columns=None)


MATCHED_COLUMNS = ["curve", "order", "density", "n", "mean", "ci95", "against", "n_paired", "diff", "diff_low",
                   "diff_high"]


def matched(rows: pd.DataFrame, metric: str, densities, against: str | None = None, x: str = "sparse_density",
            seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """Tidy, one row per (curve, density): the mean over items with its t-interval half-width (``ci95``) and, for
    every curve but ``against``, the mean paired difference curve − against over the items both share with its
    bootstrap interval. ``against`` is a curve label ('svg2 QC16/KC64'); None: the first curve in table order.
    A curve that misses a density on any of its items has no value there (NaN), and no difference."""
    per_item = item_curves(rows, metric, densities, x)
    if per_item.empty:
        return pd.DataFrame(columns=MATCHED_COLUMNS)
    curves = curves_in_order(per_item)
    against = against or curves[0]
    check_against(against, curves)
    base = per_item[per_item["curve"] == against].set_index(ITEM)
    out = []
    for curve in curves:
        part = per_item[per_item["curve"] == curve].set_index(ITEM)
        common = part.index.intersection(base.index)
        for d in densities:
            reached = part[d].notna().all()
            mean, half, n = t_interval(part[d]) if reached else (np.nan, np.nan, len(part))
            rec = dict(curve=curve, order=part["order"].iloc[0], density=d, n=n, mean=mean, ci95=half,
                       against=against, n_paired=len(common) if curve != against else 0, diff=np.nan,
                       diff_low=np.nan, diff_high=np.nan)
            a, b = part.loc[common, d], base.loc[common, d]
            if curve != against and len(common) and reached and b.notna().all():
                rec["diff"], rec["diff_low"], rec["diff_high"] = paired_difference(a, b, seed)
            out.append(rec)
    return pd.DataFrame(out, columns=MATCHED_COLUMNS)
