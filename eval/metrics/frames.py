"""Frame-level quality of a generated video against its dense reference.

Videos are (T, C, H, W) float tensors in [0, 1]. PSNR and SSIM are computed per frame and averaged over
frames. SSIM by default uses the standard Gaussian window (11×11, σ 1.5, K1 0.01, K2 0.03, data range 1),
channels averaged, border excluded: the same numbers as ``skimage.metrics.structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=...)``.
``window='uniform'`` is the reference implementation's metric script (Sparse-VideoGen svg/utils/metric.py):
an 11×11 box filter with zero padding of 5 (padding counted in the means), averaged over every pixel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def check_video(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} has shape {shape}; expected a video (T, C, H, W) in [0, 1]")


def check_pair(ref: torch.Tensor, out: torch.Tensor) -> None:
    check_video("ref", ref)
    check_video("out", out)
    if ref.shape != out.shape:
        raise ValueError(f"ref {tuple(ref.shape)} and out {tuple(out.shape)} differ; expected one (T, C, H, W)")


def psnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    """Mean over frames of 10·log10(1 / MSE); inf when a frame is identical (as scikit-image)."""
    check_pair(ref, out)
    mse = (ref.double() - out.double()).pow(2).flatten(1).mean(1)  # (T,)
    return float((10 * torch.log10(1.0 / mse)).mean())


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]  # (size, size)


SSIM_WINDOWS = ("gaussian", "uniform")


def ssim(ref: torch.Tensor, out: torch.Tensor, size: int = 11, sigma: float = 1.5, window: str = "gaussian") -> float:
    """Mean SSIM over frames, channels and pixels (interior pixels for the Gaussian window)."""
    check_pair(ref, out)
    if window not in SSIM_WINDOWS:
        raise ValueError(f"ssim window={window!r}; expected one of {SSIM_WINDOWS}")
    t, c, h, w = ref.shape
    if h < size or w < size:
        raise ValueError(f"frames are {h}x{w}; SSIM with an {size}x{size} window needs at least {size}x{size}")
    x, y = ref.double().reshape(t * c, 1, h, w), out.double().reshape(t * c, 1, h, w)
    win = gaussian_window(size, sigma)[None, None].to(x.device)

    def filt(z):
        if window == "uniform":
            return F.avg_pool2d(z, size, stride=1, padding=size // 2)  # zeros counted, as the reference does
        return F.conv2d(z, win)  # valid: skimage crops the (size-1)/2 border the same way

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx * mx, filt(y * y) - my * my, filt(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.reshape(t, -1).mean(1).mean())
