"""Quality, attention-error and FLOPs metrics of the harness."""
from __future__ import annotations

from eval.metrics.attention import cosine_error, relative_l2
from eval.metrics.flops import SHAPES, ModelShape, flops_account, flops_from_stats
from eval.metrics.frames import psnr, ssim
from eval.metrics.perceptual import available_nets, lpips_distance


def video_metrics(ref, out, lpips_nets=("alex",), ssim_window: str = "gaussian", lpips_inputs: str = "signed") -> dict:
    """PSNR, SSIM and LPIPS (per net) of a (T, C, H, W) video in [0, 1] against its dense reference."""
    row = {"psnr": psnr(ref, out), "ssim": ssim(ref, out, window=ssim_window)}
    for net in lpips_nets:
        row["lpips" if net == "alex" else f"lpips_{net}"] = lpips_distance(ref, out, net, inputs=lpips_inputs)
    return row


__all__ = ["SHAPES", "ModelShape", "available_nets", "cosine_error", "flops_account", "flops_from_stats",
           "lpips_distance", "psnr", "relative_l2", "ssim", "video_metrics"]
