from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from eval.metrics import (SHAPES, ModelShape, cosine_error, flops_account, flops_from_stats, lpips_distance, psnr,
                          relative_l2, ssim, video_metrics)
from eval.metrics.flops import layer_flops

DATA = Path(__file__).parent / "data"


def image(name):  # (1, 3, H, W) in [0, 1]
    return torch.from_numpy(np.array(Image.open(DATA / name).convert("RGB"))).permute(2, 0, 1)[None].float() / 255


def noisy_pair(t=3, h=40, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(t, 3, h, w, generator=g)
    out = (ref + 0.1 * torch.randn(t, 3, h, w, generator=g)).clamp(0, 1)
    return ref, out


def test_lpips_alexnet_matches_published_values_on_authors_examples():
    ref, p0, p1 = image("ex_ref.png"), image("ex_p0.png"), image("ex_p1.png")
    assert lpips_distance(ref, p0) == pytest.approx(0.722, abs=5e-4)
    assert lpips_distance(ref, p1) == pytest.approx(0.138, abs=5e-4)
    assert lpips_distance(ref, ref) == pytest.approx(0.0, abs=1e-6)


def test_lpips_averages_frames():
    ref, p0, p1 = image("ex_ref.png"), image("ex_p0.png"), image("ex_p1.png")
    assert lpips_distance(torch.cat([ref, ref]), torch.cat([p0, p1])) == pytest.approx((0.7219 + 0.1376) / 2, abs=5e-4)


def test_psnr_matches_skimage_per_frame_mean():
    ref, out = noisy_pair()
    expected = np.mean([peak_signal_noise_ratio(r.numpy(), o.numpy(), data_range=1) for r, o in zip(ref, out)])
    assert psnr(ref, out) == pytest.approx(expected, rel=1e-6)


def test_ssim_matches_skimage_gaussian_window():
    ref, out = noisy_pair()
    expected = np.mean([structural_similarity(r.numpy(), o.numpy(), gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False, data_range=1, channel_axis=0)
                        for r, o in zip(ref, out)])
    assert ssim(ref, out) == pytest.approx(expected, rel=1e-6)
    assert ssim(ref, ref) == pytest.approx(1.0)


def test_quality_degrades_with_noise():
    ref, a = noisy_pair(seed=1)
    b = (ref + 0.3 * torch.randn_like(ref)).clamp(0, 1)
    ma, mb = video_metrics(ref, a), video_metrics(ref, b)
    assert ma["psnr"] > mb["psnr"] and ma["ssim"] > mb["ssim"] and ma["lpips"] < mb["lpips"]


def test_frame_metrics_reject_mismatched_videos():
    ref, out = noisy_pair()
    with pytest.raises(ValueError, match="differ"):
        psnr(ref, out[:2])
    with pytest.raises(ValueError, match=r"expected a video \(T, C, H, W\)"):
        ssim(ref[0], out[0])


def test_attention_errors():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(1, 2, 16, 8, generator=g)
    assert relative_l2(ref, ref) == 0 and cosine_error(ref, ref) == pytest.approx(0, abs=1e-12)
    assert relative_l2(ref, 1.1 * ref) == pytest.approx(0.1)
    assert cosine_error(ref, 3 * ref) == pytest.approx(0, abs=1e-12)  # scale-invariant
    assert cosine_error(ref, -ref) == pytest.approx(2)


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


def test_flops_cli_prints_the_paper_columns(capsys, monkeypatch):
    from eval.metrics import flops

    monkeypatch.setattr("sys.argv", ["flops", "wan_t2v_14b_720p", "--density", "1", "0.2", "--dense-steps", "0.2",
                                     "--dense-layers", "1"])
    flops.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model | tokens | sparse density | overall density | PFLOPs")
    dense, sparse = (line.split("|")[1:-1] for line in lines[2:4])
    assert dense[3].strip() == "1.000" and float(sparse[3]) == pytest.approx(0.2 + 0.8 * 880 / 4000, abs=1e-3)
    assert float(sparse[4]) < float(dense[4]) == float(dense[5])
