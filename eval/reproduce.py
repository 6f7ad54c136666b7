"""Paper-style tables from a results folder: method, PSNR, SSIM, LPIPS, density, FLOPs, speedup (video);
method, relative L2, cosine error, density, FLOPs ratio, attention speedup (attention). One table per
(model, workload, hardware), printed as markdown and CSV and written beside the results.

    python -m eval.reproduce results/quick [--out table]
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import pandas as pd

from eval.frontier import load_configs, markdown_table
from eval.results import atomic_write

VIDEO = [("psnr", "PSNR"), ("ssim", "SSIM"), ("lpips", "LPIPS"), ("density", "density"), ("flops", "FLOPs"),
         ("speedup_e2e", "speedup")]
ATTENTION = [("rel_l2", "rel. L2"), ("cos_err", "cos. error"), ("density", "density"), ("flops_ratio", "FLOPs ratio"),
             ("speedup_attn", "attn. speedup")]


def _flops_unit(values: pd.Series) -> tuple[float, str]:
    top = values.max() if values.notna().any() else 0
    for scale, unit in ((1e15, "PFLOPs"), (1e12, "TFLOPs"), (1e9, "GFLOPs")):
        if top >= scale:
            return scale, unit
    return 1e6, "MFLOPs"


def paper_tables(folder) -> list[tuple[str, pd.DataFrame]]:
    """(title, table) per (model, workload, hardware) group of the folder's configurations."""
    configs = load_configs(folder)
    if configs.empty:
        raise ValueError(f"{folder} has no finished rows; expected the output of eval.sweep")
    keys = [k for k in ("model", "workload", "hardware") if k in configs]
    tables = []
    for group, part in configs.groupby(keys, dropna=False, sort=True):
        group = dict(zip(keys, group if isinstance(group, tuple) else (group,)))
        columns = ATTENTION if group.get("workload") == "attention" else VIDEO
        order = part["order"] if "order" in part else pd.Series(0, index=part.index)
        part = part.assign(_order=order.fillna(order.max() + 1)).sort_values(["_order", "label"])
        table = pd.DataFrame({"method": part["label"].values})
        cpu = "timer" in part and (part["timer"] == "cpu_wall").all()
        for col, name in columns:
            if col not in part or not part[col].notna().any():
                continue
            values = part[col]
            if col == "flops":
                scale, name = _flops_unit(values)
                values = values / scale
            if col.startswith("speedup") and cpu:
                name = f"{name} (CPU time ratio)"
            table[name] = values.values
        title = " | ".join(f"{k}: {v}" for k, v in group.items())
        tables.append((title, table))
    return tables


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Print paper-style tables of a results folder (markdown and CSV).")
    ap.add_argument("folder", type=Path)
    ap.add_argument("--out", default="table", help="file stem written in the folder: <out>.md and <out>.csv")
    args = ap.parse_args(argv)
    md, csv = [], []
    for title, table in paper_tables(args.folder):
        md.append(f"### {title}\n\n{markdown_table(table)}\n")
        buf = io.StringIO()
        table.assign(group=title).to_csv(buf, index=False, float_format="%.6g")
        csv.append(buf.getvalue())
    note = ("\nSpeedups measured on the CPU are wall-clock time ratios of this machine, not speedups of the "
            "method.\n" if any("CPU time ratio" in t for t in md) else "")
    text_md, text_csv = "\n".join(md) + note, "".join(csv)
    print(text_md)
    print(text_csv)
    atomic_write(args.folder / f"{args.out}.md", text_md.encode())
    atomic_write(args.folder / f"{args.out}.csv", text_csv.encode())


if __name__ == "__main__":
    main()
