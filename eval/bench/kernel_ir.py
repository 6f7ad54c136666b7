"""How Triton pipelines the sparse kernel, read from its TTGIR: compiled for sm_90 on any machine (no GPU).

    python -m eval.bench.kernel_ir                                  # the default config
    python -m eval.bench.kernel_ir --config "M128 N64 w4 s3 c16"    # any config of eval.bench.attention's sweep

Prints the shared memory, the K/V buffer slots and the ``async_wait`` counts of the main loop: ``num = 0``
at the top of the loop means the K/V loads of the next tile are waited for before its QK dot (no
prefetch beyond one tile); ``num > 0`` means later tiles' loads stay in flight (svg2/kernels/NOTES.md).
Pointers and strides are marked 16-divisible, as the launcher's specialisation does for real tensors.
"""
from __future__ import annotations

import argparse
import json
import re

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

from svg2.kernels.varblock import VarblockConfig, _varblock_fwd_kernel, default_config, parse_config

STRIDES = ("sqn", "sqs", "skn", "sks", "svn", "svs", "son", "sos", "T", "MAXBOX", "MAXCH")


def compile_sm90(config: VarblockConfig, head_dim: int = 128, dtype: str = "bf16", tma: bool | None = None):
    """The kernel as the launcher specialises it for contiguous permuted tensors (no orders); ``tma`` defaults
    to the config's (box tiles through TMA descriptors)."""
    fn = _varblock_fwd_kernel
    if not isinstance(fn, JITFunction):
        raise RuntimeError("TRITON_INTERPRET=1 is set: kernels are interpreted, not compiled; run without it "
                           "(the interpreter patches triton.language in this process)")
    names = fn.arg_names
    tma = config.tma and config.tiling != "gather" if tma is None else tma
    const = dict(D=head_dim, BLOCK_M=config.block_m, BLOCK_N=config.block_n, CHUNK=config.chunk,
                 Q_GATHER=False, O_SCATTER=False, HAS_KIDX=False, IEEE=dtype == "fp32",
                 BOX_LOOP=config.tiling != "gather", BOX_TAILS=config.tiling == "box",
                 CHUNK_LOOP=config.tiling != "box", TMA=tma, WS=config.warp_specialize and tma,
                 ORDERED=config.order != "natural")
    sig = {}
    for name in names:
        if name in const:
            sig[name] = "constexpr"
        elif name in ("q_ptr", "k_ptr", "v_ptr", "o_ptr"):
            sig[name] = f"*{dtype}"
        elif name.endswith("_ptr"):
            sig[name] = "*i32"
        else:
            sig[name] = "fp32" if name == "scale_log2" else "i32"
    aligned = [n for n in names if n.endswith("_ptr") or n in STRIDES]
    src = ASTSource(fn, sig, {(names.index(k),): v for k, v in const.items()},
                    {(names.index(n),): [["tt.divisibility", 16]] for n in aligned})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=config.num_warps, num_stages=config.num_stages))


def schedule(config: VarblockConfig) -> dict:
    """Shared memory, copies, buffer slots, warp specialisation and each loop's async_wait counts."""
    kernel = compile_sm90(config)
    ttgir = kernel.asm["ttgir"]
    loops = []
    rest = ttgir
    while "scf.for" in rest:  # the key loops, in order: boxes (if any), then gathered tiles
        rest = rest[rest.index("scf.for"):]
        body = rest[:rest.index("scf.yield")]
        loops.append(dict(waits=[int(x) for x in re.findall(r"async_wait[^\n]*\{num = (\d+)", body)],
                          tma_loads=len(re.findall(r"async_tma_copy_global_to_local", body)),
                          register_loads=len(re.findall(r"= tt\.load ", body))))
        rest = rest[len("scf.for"):]
    slots = [int(m) for m in re.findall(r"local_alloc : \(\) -> !ttg\.memdesc<(\d+)x\d+x\d+xbf16", ttgir)]
    return dict(shared_bytes=kernel.metadata.shared,
                async_copies=len(re.findall(r"async_copy_global_to_local", ttgir)),
                tma_copies=len(re.findall(r"async_tma_copy_global_to_local", ttgir)),
                warp_specialize=len(re.findall(r"ttg\.warp_specialize", ttgir)),
                kv_slots=slots, loops=loops,
                loop_waits=loops[-1]["waits"] if loops else [])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="e.g. 'M64 N64 w4 s3 c16' (default: the GPU default)")
    p.add_argument("--json", action="store_true", help="print the schedule as one JSON object")
    args = p.parse_args(argv)
    config = parse_config(args.config) if args.config else default_config()
    info = schedule(config)
    if args.json:
        print(json.dumps(info))
        return info
    print(f"{config}:")
    for key, val in info.items():
        print(f"  {key}: {val}")
    return info


if __name__ == "__main__":
    main()
