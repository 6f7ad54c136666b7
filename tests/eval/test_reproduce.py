import pandas as pd
import pytest

from eval.reproduce import default_densities, main, paper_tables
from tests.eval.synthetic_results import ITEMS, write_folder


def test_tables_give_means_with_intervals_and_n(tmp_path):
    write_folder(tmp_path)
    ((_, table),) = paper_tables(tmp_path)
    assert list(table.columns[:3]) == ["method", "PSNR", "PSNR ±95%"] and table.columns[-1] == "n"
    assert table["method"].iloc[0] == "dense" and (table["n"] == len(ITEMS)).all()
    assert table["PSNR ±95%"].iloc[1:].gt(0).all() and pd.isna(table["PSNR ±95%"].iloc[0])


def test_reproduce_prints_and_writes_matched_density_tables(tmp_path, capsys):
    write_folder(tmp_path)
    main([str(tmp_path)])
    out = capsys.readouterr().out
    md = (tmp_path / "table.md").read_text()
    assert md in out and "## At matched density" in md and "Paired difference against positional b64" in md
    assert f"| d={default_densities()[0]:g} |" in md  # densities from conf/metrics/default.yaml
    assert "| svg2 QC16/KC64 p0.7 | 24.4 ± 4.1 |" in md
    matched = pd.read_csv(tmp_path / "table_matched.csv")
    assert {"group", "metric", "curve", "density", "n", "mean", "ci95", "against", "diff", "diff_low",
            "diff_high"} <= set(matched.columns)
    assert set(matched["metric"]) == {"psnr", "ssim", "lpips"} and set(matched["against"]) == {"positional b64"}
    first = (tmp_path / "table_matched.csv").read_bytes()
    main([str(tmp_path)])
    assert (tmp_path / "table_matched.csv").read_bytes() == first  # bootstrap with a fixed seed


def test_reproduce_against_a_named_family_and_checks_its_input(tmp_path, capsys):
    write_folder(tmp_path)
    main([str(tmp_path), "--against", "svg2 QC64/KC256", "--densities", "0.2", "0.3"])
    md = (tmp_path / "table.md").read_text()
    assert "Paired difference against svg2 QC64/KC256" in md and "| d=0.3 |" in md
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--against", "nope"])
    assert exit_.value.code == 2 and "against='nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--densities", "1.5"])
    assert "density 1.5 is outside (0, 1]" in capsys.readouterr().err
