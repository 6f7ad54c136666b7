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


def test_uniform_window_ssim_is_the_reference_scripts():
    # The reference's metric script, written out: per frame, 11x11 box means with zero padding 5 (padding counted),
    # SSIM map averaged over every pixel and channel.
    import torch.nn.functional as F

    from eval.metrics import ssim

    torch.manual_seed(0)
    ref = torch.rand(3, 3, 40, 36)
    out = (ref + 0.1 * torch.randn_like(ref)).clamp(0, 1)

    def reference(a, b):
        pool = lambda z: F.avg_pool2d(z, kernel_size=11, stride=1, padding=5)  # noqa: E731
        mu1, mu2 = pool(a), pool(b)
        s1, s2, s12 = pool(a * a) - mu1 ** 2, pool(b * b) - mu2 ** 2, pool(a * b) - mu1 * mu2
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        return (((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s1 + s2 + c2))).mean()

    expected = sum(float(reference(ref[i:i + 1].double(), out[i:i + 1].double())) for i in range(3)) / 3
    assert abs(ssim(ref, out, window="uniform") - expected) < 1e-12
    assert abs(ssim(ref, out) - ssim(ref, out, window="uniform")) > 1e-4  # not the default's number
    with pytest.raises(ValueError, match="window='box'"):
        ssim(ref, out, window="box")


def test_lpips_unit_inputs_feed_frames_as_they_are():
    from eval.metrics.perceptual import lpips_distance, lpips_model

    torch.manual_seed(0)
    ref = torch.rand(2, 3, 32, 32)
    out = (ref + 0.2 * torch.randn_like(ref)).clamp(0, 1)
    model = lpips_model("alex")
    expected = float(model(ref, out).mean())
    assert abs(lpips_distance(ref, out, inputs="unit") - expected) < 1e-6
    assert abs(lpips_distance(ref, out) - float(model(ref * 2 - 1, out * 2 - 1).mean())) < 1e-6


@pytest.mark.parametrize("name,cfg", [
    ("svg2", dict(num_q_clusters=5, num_k_clusters=9, top_p=0.7, kmeans_iters_first=3)),
    ("positional", dict(block_size=16, top_p=0.6)),
])
def test_plan_quality_against_the_dense_softmax(name, cfg):
    from eval.metrics.attention import plan_quality
    from svg2.methods import build_method
    from svg2.reference import token_mask
    from tests.svg2.test_attention import plan_of

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 70, 16) for _ in range(3))  # S not a multiple of the blocks
    method = build_method(name, **cfg)
    method.record_plans = True  # as the attention workload measures: svg2 keeps its mass estimate only then
    plan, ql, kl = plan_of(method, q, k, v)
    got = plan_quality(q, k, plan, chunk_rows=32)
    probs = torch.softmax(q.double() @ k.double().transpose(-1, -2) / 4, -1)  # (1, 2, S, S)
    mask = token_mask(plan.block_map.keep, ql, kl)
    torch.testing.assert_close(got["recall"], (probs * mask).sum(-1).mean(-1).reshape(2))
    qc, kc = plan.block_map.keep.shape[-2:]
    for head in range(2):  # true mass of each block: mean over the cluster's queries of its keys' probabilities
        true = torch.zeros(qc, kc, dtype=torch.float64)
        for i in range(qc):
            for j in range(kc):
                rows, cols = ql[0, head] == i, kl[0, head] == j
                if rows.any():
                    true[i, j] = probs[0, head][rows][:, cols].sum(-1).mean()
        keep = plan.block_map.keep[0, head]
        err = (plan.mass[head].double() - true).abs()[keep].mean()
        assert abs(float(got["mass_err"][head]) - float(err)) < 1e-6 * float(err)  # (scores in fp32 there)
    assert (got["waste"] >= 1).all() and 0 < float(got["recall"].min()) < 1
