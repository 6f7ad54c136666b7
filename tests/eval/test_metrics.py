from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from eval.metrics import cosine_error, lpips_distance, psnr, relative_l2, ssim, video_metrics

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
