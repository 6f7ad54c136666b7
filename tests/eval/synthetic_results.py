"""Small synthetic result folders (written through ResultStore, no model runs) for the table and plot tests."""
from __future__ import annotations

import math

from eval.results import ResultStore, stable_key

ITEMS = (("p0", 0), ("p1", 0), ("p0", 1), ("p1", 1))
# (method, family, order, [(budget, density)], PSNR offset of the family): PSNR = 30 + 5 ln(density) + offset +
# the item's own shift, so two families differ by the difference of their offsets at every density
FAMILIES = [("positional", "b64", 10, [("p0.5", 0.2), ("p0.9", 0.4)], 0.0),
            ("positional", "tile(1, 8, 8)", 10, [("p0.5", 0.18), ("p0.9", 0.45)], 0.5),
            ("svg2", "QC16/KC64", 20, [("p0.5", 0.12), ("p0.7", 0.22), ("p0.9", 0.38)], -1.0),
            ("svg2", "QC64/KC256", 20, [("p0.5", 0.1), ("p0.9", 0.3)], 1.0)]


def write_folder(folder, families=FAMILIES, items=ITEMS, timer="cuda_events", writers=None, dense=True):
    """One row per (config, item) plus the reference; ``writers``: (host, pid) per item, or None (rows without
    the columns, as written before rows recorded them)."""
    store = ResultStore(folder)
    common = dict(sweep="t", model="m", workload="video", hardware="H200", status="ok", timer=timer)
    for i, (prompt, seed) in enumerate(items):
        shift = 2.0 * i - 0.3 * (i % 2)  # items differ much more than the families do
        extra = {} if writers is None else dict(host=writers[i][0], pid=writers[i][1])
        if dense:
            store.write(f"dense-{i}", dict(**common, **extra, method="dense", label="dense", order=0, reference=True,
                                           family="", family_key="dense", config_key="dense", prompt=prompt,
                                           seed=seed, psnr=math.inf, ssim=1.0, lpips=0.0, density=1.0,
                                           sparse_density=None, flops_ratio=1.0, speedup_e2e=1.0))
        for method, family, order, budgets, offset in families:
            for budget, density in budgets:
                d = density * (1 + 0.01 * i)
                psnr = 30 + 5 * math.log(d) + offset + shift
                store.write(stable_key(method, family, budget, i), dict(
                    **common, **extra, method=method, label=f"{method} {family} {budget}", order=order,
                    reference=False, family=family, family_key=f"{method}/{family}",
                    config_key=f"{method}/{family}/{budget}", prompt=prompt, seed=seed, psnr=psnr,
                    ssim=psnr / 40, lpips=1 - psnr / 40, density=d, sparse_density=d, flops_ratio=d,
                    speedup_e2e=1 / d ** 0.5, **{"method.top_p": float(budget[1:])}))
    store.combine()
    return store
