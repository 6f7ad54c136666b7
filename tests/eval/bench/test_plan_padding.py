import pandas as pd

import eval.bench.plan_padding as plan_padding
from eval import shapes


def test_padding_table_has_every_tiling_and_larger_tiles_pad_more(tmp_path, monkeypatch):
    monkeypatch.setitem(shapes.SHAPES, "small", shapes.ModelShape("small", 1, 1, 128, 512, 192, 0, grid=(2, 8, 12)))
    monkeypatch.setattr(plan_padding, "BUDGETS", {"top_p 0.9": dict(top_k=None, top_p=0.9, min_kc_ratio=0.1)})
    rows = plan_padding.padding_rows("small", heads=1, qc=12, kc=24, aligns=(0, 16))
    df = pd.DataFrame(rows)
    assert len(df) == 2 * len(plan_padding.TILINGS)
    aligned = df[df.align_q_tile == 16]
    assert aligned.shape[0] == len(plan_padding.TILINGS) and (aligned.work_over_kept >= 1).all()
    df = df[df.align_q_tile == 0]
    assert (df.work_over_kept >= 1).all() and 0 < df.density.iloc[0] <= 1
    by = df.set_index(["block_m", "chunk"]).work_over_kept
    assert by[(32, 8)] <= by[(64, 8)] <= by[(128, 8)]
    assert by[(64, 8)] <= by[(64, 16)]
    out = tmp_path / "padding.csv"
    monkeypatch.setattr(plan_padding, "padding_rows", lambda shape, heads: rows)
    plan_padding.main(["--shape", "wan_t2v_14b_720p", "--heads", "1", "--out", str(out)])
    saved = pd.read_csv(out)
    assert saved.shape[0] == len(rows) and {"commit", "torch", "cpu"} <= set(saved.columns)  # its environment
