"""Paper-style tables from a results folder: method, PSNR, SSIM, LPIPS, density, FLOPs, speedup (video);
method, relative L2, cosine error, density, FLOPs ratio, attention speedup (attention); each value the mean over
prompts and seeds ± its 95 % t-interval, with n. Then every quality metric at matched sparse densities, with the
paired difference against one method family. One table per (model, workload, hardware), printed as markdown and
CSV and written beside the results (<out>.md, <out>.csv, <out>_matched.csv).

    python -m eval.reproduce results/quick [--out table] [--against "svg2 QC16/KC64"] [--densities 0.15 0.25]
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from eval.config import CONF
from eval.frontier import CI, comparison_groups, config_means, markdown_table, matched_tables, process_count
from eval.results import atomic_write, load_results

VIDEO = [("psnr", "PSNR"), ("ssim", "SSIM"), ("lpips", "LPIPS"), ("density", "density"), ("flops", "FLOPs"),
         ("speedup_e2e", "speedup")]
ATTENTION = [("rel_l2", "rel. L2"), ("cos_err", "cos. error"), ("density", "density"), ("flops_ratio", "FLOPs ratio"),
             ("speedup_attn", "attn. speedup")]
QUALITY = ["psnr", "ssim", "lpips", "lpips_vgg", "rel_l2", "cos_err"]  # compared at matched density


def _flops_unit(values: pd.Series) -> tuple[float, str]:
    top = values.max() if values.notna().any() else 0
    for scale, unit in ((1e15, "PFLOPs"), (1e12, "TFLOPs"), (1e9, "GFLOPs")):
        if top >= scale:
            return scale, unit
    return 1e6, "MFLOPs"


def paper_tables(folder, rows: pd.DataFrame | None = None) -> list[tuple[str, pd.DataFrame]]:
    """(title, table) per (model, workload, hardware) group of the folder's configurations; a column '<name> ±95%'
    beside each value holds the half-width of its t-interval (NaN with one row), 'n' the rows averaged.
    ``rows``: the folder's rows where the caller has them already (None: loaded)."""
    configs = config_means(load_results(folder) if rows is None else rows)
    if configs.empty:
        raise ValueError(f"{folder} has no finished rows; expected the output of eval.sweep")
    tables = []
    for title, part in comparison_groups(configs):
        columns = ATTENTION if "workload" in part and part["workload"].iloc[0] == "attention" else VIDEO
        part = part.sort_values(["order", "label"])
        table = pd.DataFrame({"method": part["label"].values})
        cpu = "timer" in part and (part["timer"] == "cpu_wall").all()
        processes = process_count(part)
        for col, name in columns:
            if col not in part or not part[col].notna().any():
                continue
            values, half = part[col], part.get(f"{col}_ci95")
            if col == "flops":
                scale, name = _flops_unit(values)
                values, half = values / scale, None if half is None else half / scale
            if col.startswith("speedup") and cpu:
                name = f"{name} (CPU time ratio" + (f", {processes} processes)" if processes > 1 else ")")
            table[name] = values.values
            if half is not None:
                table[f"{name}{CI}"] = half.values
        table["n"] = part["rows"].values
        tables.append((title, table))
    return tables


def default_densities() -> list[float]:
    """metrics.frontier.matched_density of conf/metrics/default.yaml (the one home of the default)."""
    return list(OmegaConf.load(CONF / "metrics" / "default.yaml").frontier.matched_density)


def _density(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"density {text} is outside (0, 1]; expected a sparse-call density")
    return value


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Print paper-style tables of a results folder (markdown and CSV).")
    ap.add_argument("folder", type=Path)
    ap.add_argument("--out", default="table", help="file stem written in the folder: <out>.md, <out>.csv and "
                                                    "<out>_matched.csv")
    ap.add_argument("--against", default=None, help="method family the paired differences are taken against, as "
                                                    "labelled in the tables ('svg2 QC16/KC64'); default: the first "
                                                    "non-reference family in table order")
    ap.add_argument("--densities", type=_density, nargs="+", default=None,
                    help="sparse densities of the matched comparison (default: metrics.frontier.matched_density)")
    args = ap.parse_args(argv)
    rows = load_results(args.folder)
    md, csv = [], []
    for title, table in paper_tables(args.folder, rows):
        md.append(f"### {title}\n\n{markdown_table(table)}\n")
        buf = io.StringIO()
        table.assign(group=title).to_csv(buf, index=False, float_format="%.6g")
        csv.append(buf.getvalue())
    note = "\n± : 95 % t-interval over prompts and seeds (none where n = 1).\n"
    if any("CPU time ratio" in t for t in md):
        note += "Speedups measured on the CPU are wall-clock time ratios of this machine, not speedups of the method.\n"
    try:
        frame, text = matched_tables(rows, QUALITY, args.densities or default_densities(), args.against)
    except ValueError as e:
        ap.error(str(e))
    matched_csv = frame.to_csv(index=False, float_format="%.6g") if len(frame) else ""
    text_md = "\n".join(md) + note + (f"\n## At matched density\n\n{text}\n" if text else "")
    text_csv = "".join(csv)
    print(text_md)
    print(text_csv)
    print(matched_csv)
    atomic_write(args.folder / f"{args.out}.md", text_md.encode())
    atomic_write(args.folder / f"{args.out}.csv", text_csv.encode())
    atomic_write(args.folder / f"{args.out}_matched.csv", matched_csv.encode())


if __name__ == "__main__":
    main()
