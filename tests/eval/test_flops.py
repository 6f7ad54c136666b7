"""The FLOPs columns: the analytic transformer account, the whole-pipeline count, the paper's formula."""
import pytest
import torch

from eval.metrics import flops
from eval.metrics.flops import (dense_calls, fit_dense_steps, flops_account, flops_from_stats, layer_flops,
                                paper_account)
from eval.shapes import SHAPES, ModelShape, from_transformer, load_config


def test_flops_dense_config_and_warmup():
    shape = SHAPES["wan_t2v_14b_720p"]
    assert shape.video_tokens == 75_600
    dense = flops_account(shape, 1.0)
    assert dense["flops_ratio"] == 1 and dense["density"] == 1
    sparse = flops_account(shape, 0.1)
    warm = flops_account(shape, 0.1, dense_steps=0.2, dense_layers=1)
    assert sparse["pflops"] < warm["pflops"] < dense["pflops"]
    # 20% of 50 steps dense (10 x 40 layers) + layer 0 of the 40 other steps, times 2 CFG branches
    assert warm["dense_calls"] == (10 * 40 + 40) * 2
    assert warm["density"] == pytest.approx((880 + (4000 - 880) * 0.1) / 4000)


def test_flops_attention_term_is_quadratic_in_tokens():
    a = ModelShape("a", 1, 1, 64, 256, 1000, 0, cfg_branches=1, steps=1)
    b = ModelShape("b", 1, 1, 64, 256, 2000, 0, cfg_branches=1, steps=1)
    assert layer_flops(b)[0] == 4 * layer_flops(a)[0]
    assert layer_flops(b)[1] == 2 * layer_flops(a)[1]


def test_flops_from_stats_matches_account():
    shape = ModelShape("s", 2, 2, 16, 64, 100, 8, cfg_branches=1, steps=3)
    densities = [1.0, 1.0] + [0.25] * 4  # step 0 dense, then sparse
    measured = flops_from_stats(shape, densities)
    planned = flops_account(shape, 0.25, dense_steps=1)
    assert measured["flops"] == pytest.approx(planned["pflops"] * 1e15)
    assert measured["density"] == pytest.approx(planned["density"])
    with pytest.raises(ValueError, match="no attention calls"):
        flops_from_stats(shape, [])


def test_joint_model_flops_count_the_prompt_pairs_once():
    """A joint model's measured density already covers its prompt pairs: its FLOPs are 4·d·pairs, no more."""
    from svg2.methods import build_method

    n, text, heads, head_dim = 64, 16, 2, 16
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, n + text, head_dim, generator=g) for _ in range(3))
    method = build_method("positional", block_size=16, top_p=0.5, min_kc_ratio=0.0)
    method(q, k, v, video=slice(0, n))  # the video tokens first, the prompt's last (HunyuanVideo's order)
    density = method.stats[-1].as_row()["density"]
    kept_pairs = density * (n + text) ** 2  # what the method reports: kept pairs over every pair of the call
    assert (n + text) ** 2 - n ** 2 < kept_pairs < (n + text) ** 2  # prompt pairs kept, some video pairs dropped
    shape = ModelShape("joint", 1, heads, head_dim, 4 * heads * head_dim, n, text, joint=True, cfg_branches=1,
                       steps=1)
    measured = flops_from_stats(shape, [density])
    other = layer_flops(shape)[1]
    assert measured["flops"] - other == pytest.approx(4 * heads * head_dim * kept_pairs)


@pytest.mark.parametrize("bad", [dict(dense_steps=-0.2), dict(dense_steps=2.5), dict(dense_steps=60),
                                 dict(dense_layers=-1), dict(dense_layers=41), dict(dense_layers=0.5)])
def test_warmup_outside_the_generation_is_an_error(bad):
    with pytest.raises(ValueError, match="dense_"):
        dense_calls(SHAPES["wan_t2v_14b_720p"], **bad)


def test_cli_rejects_a_negative_warmup(capsys):
    with pytest.raises(SystemExit):
        flops.main(["wan_t2v_14b_720p", "--dense-steps", "-0.2", "--transformer-only"])
    assert "expected a fraction in [0, 1) or a whole number of steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        flops.main(["wan_t2v_14b_720p", "--density", "1.5", "--transformer-only"])


def test_paper_formula_reproduces_the_papers_dense_column():
    paper = {"wan_t2v_14b_720p": 658.46, "wan_i2v_14b_720p": 526.76, "hunyuan_720p": 612.38}
    for name, pflops in paper.items():
        assert paper_account(SHAPES[name])["pflops_dense"] == pytest.approx(pflops, rel=1e-4), name


def test_warmup_fit_recovers_the_warmup_of_a_row():
    shape = SHAPES["hunyuan_720p"]
    row = paper_account(shape, 0.25, dense_steps=0.3)
    steps = fit_dense_steps(shape, 0.25, row["pflops_dense"], row["pflops"])
    assert steps == pytest.approx(15)  # 30% of 50
    one_layer = paper_account(shape, 0.25, dense_steps=10, dense_layers=1)
    assert fit_dense_steps(shape, 0.25, one_layer["pflops_dense"], one_layer["pflops"], dense_layers=1) == \
        pytest.approx(10)


def test_cli_prints_every_column(capsys, monkeypatch):
    from eval.metrics import pipeline_flops

    counted = pipeline_flops.PipelineCount(int(layer_flops(SHAPES["wan_t2v_14b_720p"])[1] * 40), {"vae_decode": 10**15})
    monkeypatch.setattr(pipeline_flops, "committed_count", lambda shape: counted)
    flops.main(["wan_t2v_14b_720p", "--density", "1", "0.2", "--dense-steps", "0.2", "--dense-layers", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model | tokens | sparse density | overall density | PFLOPs")
    assert "pipeline PFLOPs" in lines[0] and "paper formula" in lines[0]
    dense, sparse = ([float(x) if x.strip()[0].isdigit() else x for x in line.split("|")[1:-1]] for line in lines[2:4])
    assert dense[3] == 1.0 and sparse[3] == pytest.approx(0.2 + 0.8 * 880 / 4000, abs=1e-3)
    assert sparse[4] < dense[4] == dense[5]
    assert dense[7] == pytest.approx(dense[4] + 1.0, abs=0.01)  # the transformer as counted here, plus the VAE
    assert dense[9] == pytest.approx(658.46, abs=0.01)


def test_counter_sees_each_wan_block_as_the_formula_counts_it():
    """One transformer block of a small Wan configuration, counted on the meta device: exactly layer_flops."""
    from torch.utils.flop_counter import FlopCounterMode

    from eval.shapes import build_transformer, transformer_inputs

    config = {**load_config("Wan2.1-T2V-14B-Diffusers", "transformer"), "num_attention_heads": 2,
              "attention_head_dim": 16, "ffn_dim": 64, "num_layers": 2, "text_dim": 32, "freq_dim": 32}
    shape = from_transformer("small_wan", config, (9, 128, 128), 16)
    model = build_transformer(shape, "meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**transformer_inputs(shape, "meta"))
    per_module = counter.get_flop_counts()
    for i in range(shape.layers):
        block = per_module[f"WanTransformer3DModel.blocks.{i}"]
        assert sum(block.values()) == sum(layer_flops(shape, 1.0))
