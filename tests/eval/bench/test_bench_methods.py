import pandas as pd

from eval.bench.methods import main


def test_every_method_row_has_its_density_stages_and_speedup(tmp_path):
    out = tmp_path / "methods.csv"
    main(["--toy", "--repeats", "1", "--methods", "draft,sta", "--out", str(out)])
    df = pd.read_csv(out).set_index("label")
    assert list(df["method"]) == ["dense_cudnn", "draft", "sta", "positional"]  # positional: the full-tile reference
    sparse = df[df["method"] != "dense_cudnn"]
    assert (sparse["density"] > 0).all() and (sparse["density"] <= 1).all() and "error" not in df
    assert (sparse["ms_attend"] > 0).all() and sparse["selection_share"].between(0, 1).all()
    assert df.loc["positional b128 k2", "density"] == 0.25 and (df["timer"] == "cpu_wall").all()
