"""What both workloads share: the per-call statistics of a method summarised into row columns."""
from __future__ import annotations

from collections import defaultdict

from svg2.timing import STAGES


def summarise_calls(rows: list[dict]) -> dict:
    """Totals over a generation's attention calls: density (all calls and sparse calls only), k-means
    iterations and milliseconds per stage (``attn_ms`` their sum)."""
    if not rows:
        return {"calls": 0}
    sparse = [r for r in rows if not r["ran_dense"]]
    out = {"calls": len(rows), "sparse_calls": len(sparse),
           "density": sum(r["density"] for r in rows) / len(rows),
           "sparse_density": sum(r["density"] for r in sparse) / len(sparse) if sparse else None,
           "kmeans_iters": sum(r["kmeans_iters"] for r in rows)}
    ms = defaultdict(float)
    for r in rows:
        for stage in STAGES:
            ms[stage] += r.get(f"ms_{stage}", 0.0)
    for stage in STAGES:
        out[f"ms_{stage}"] = ms[stage]
    out["attn_ms"] = sum(ms.values())
    return out


def ratio(num, den):
    return num / den if num is not None and den else None
