"""Workloads: ``video`` (full generations scored by PSNR/SSIM/LPIPS against the dense video) and
``attention`` (captured or synthetic Q/K/V scored by attention error against dense attention)."""
from eval.workloads.attention import AttentionWorkload
from eval.workloads.video import VideoWorkload

__all__ = ["AttentionWorkload", "VideoWorkload"]
