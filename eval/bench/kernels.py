"""Kernel variants at Wan 14B 720p on one GPU, each checked against an fp32 reference, then timed (CUDA only).

    python -m eval.bench.kernels --out /tmp/k                          # every section
    python -m eval.bench.kernels --sections sparse --svg2-configs "M64 N64 w4 s3 c16 km,..." --out /tmp/k

Sections:
- ``dense``: a plain Triton dense attention forward (Q, K, V through on-device TMA descriptors, optional warp
  specialisation) against cuDNN at 40 x 65,536 x 128 bf16: what Triton reaches on this GPU without sparsity;
- ``sparse``: the variable-block kernel alone (``svg2.kernels.varblock``) on permuted tensors, for an svg2 plan
  (QC 300, KC 1000, top_p 0.9 on ``eval.synthetic.structured_qkv`` at scale 0.8: density ~0.25) and a positional
  plan (128-token blocks, top_k at density ~0.25), one row per config: ms, TFLOP/s on kept pairs, tile work over
  kept pairs, relative L2 error on sampled rows against fp32 (output poisoned with NaN first);
- ``kmeans``: Q300 + K1000, 2 warm iterations (assignment, then the sorted update), per assignment tile config;
- ``density``: whole svg2 and positional calls over a budget sweep against cuDNN (break-even density).
Rows go to ``OUT/rows.jsonl`` as they come; a table is printed last. A deadline skips what does not fit.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
import traceback

import torch
import triton
import triton.language as tl

from eval.shapes import get_shape
from svg2.reference import masked_attention
from svg2.timing import Clock, median_ms

D = 128
SHAPE = "wan_t2v_14b_720p"  # the sections' shape but the density sweep's (eval.shapes; its svg2 preset)
SVG2_CONFIGS = "M128 N128 w8 s3 c8 km oc h1,M64 N64 w4 s3 c8 km oc,M64 N64 w4 s3 c16 kg on"
POS_CONFIGS = "M128 N128 w8 s3 c8 km oc h1,M128 N128 w4 s2 kb ws1,M64 N64 w4 s3 c16 kg on"
Q_ORDER_CONFIGS = "M128 N128 w8 s3 c8 km oc h1,M64 N64 w4 s3 c8 km oc,M64 N64 w4 s3 c16 kg on"
DENSE_CONFIGS = "M128 N128 w4 s2 ws1,M128 N128 w8 s3 ws0"
ASSIGN_CONFIGS = "S256 K64 w8 s3,S128 K64 w4 s3"
# Tiny shapes for a CPU dry run of the script itself (TRITON_INTERPRET=1 ... --smoke): no timing worth reading.
SMOKE = dict(heads=2, grid=(3, 6, 8), qc=8, kc=16, block=16,
             configs="M16 N16 w4 s1 c4 km,M32 N16 w4 s1 c4 km h1 ol,M128 N16 w4 s1 kb ws1")


class Bench:
    def __init__(self, out_dir: str, deadline_s: float, repeats: int, smoke: bool = False):
        self.out_dir, self.deadline, self.repeats = out_dir, time.time() + deadline_s, repeats
        self.smoke, self.device = smoke, "cpu" if smoke else "cuda"
        self.clock = Clock(self.device)
        self.rows: list[dict] = []
        os.makedirs(out_dir, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.time()

    def add(self, **row) -> None:
        self.rows.append(row)
        with open(os.path.join(self.out_dir, "rows.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    def time_ms(self, fn) -> float:
        return median_ms(self.clock, fn, self.repeats, warmup=1)


# --- dense probe -----------------------------------------------------------------------------------------

@triton.jit
def _dense_fwd(q_ptr, k_ptr, v_ptr, o_ptr, S, scale_log2, D: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, WS: tl.constexpr):
    t = tl.program_id(0)
    base = tl.program_id(1).to(tl.int64) * S * D
    q_desc = tl.make_tensor_descriptor(q_ptr + base, shape=[S, D], strides=[D, 1], block_shape=[BLOCK_M, D])
    k_desc = tl.make_tensor_descriptor(k_ptr + base, shape=[S, D], strides=[D, 1], block_shape=[BLOCK_N, D])
    v_desc = tl.make_tensor_descriptor(v_ptr + base, shape=[S, D], strides=[D, 1], block_shape=[BLOCK_N, D])
    o_desc = tl.make_tensor_descriptor(o_ptr + base, shape=[S, D], strides=[D, 1], block_shape=[BLOCK_M, D])
    q = q_desc.load([t * BLOCK_M, 0])
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    for s0 in tl.range(0, S, BLOCK_N, warp_specialize=WS):  # S a multiple of BLOCK_N: no key mask
        qk = tl.dot(q, k_desc.load([s0, 0]).T)
        m_new = tl.maximum(m_i, tl.max(qk, 1) * scale_log2)
        p = tl.exp2(qk * scale_log2 - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(q.dtype), v_desc.load([s0, 0]), acc)
        m_i = m_new
    o_desc.store([t * BLOCK_M, 0], (acc / l_i[:, None]).to(q.dtype))


def dense_probe(bench: Bench, configs: str) -> None:
    from svg2.attention import dense_attention
    from svg2.kernels.varblock import _ensure_allocator

    h, s = 40, 65536
    g = torch.Generator(device="cuda").manual_seed(1)
    q, k, v = (torch.randn(1, h, s, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    flop = 4 * h * s * s * D
    ref = dense_attention(q, k, v, "cudnn")
    ms = bench.time_ms(lambda: dense_attention(q, k, v, "cudnn"))
    bench.add(section="dense", config="cudnn", ms=ms, tflops=flop / ms / 1e9)
    _ensure_allocator(q.device)
    for spec in configs.split(","):
        if bench.left() < 0:
            break
        f = {("ws" if tok.startswith("ws") else tok[0]): int(tok[2 if tok.startswith("ws") else 1:])
             for tok in spec.split()}
        bm, bn, w, st, ws = f["M"], f["N"], f["w"], f["s"], bool(f["ws"])
        out = torch.full_like(q, float("nan"))
        try:
            run = lambda: _dense_fwd[(s // bm, h)](q, k, v, out, s, math.log2(math.e) / math.sqrt(D), D=D,  # noqa
                                                   BLOCK_M=bm, BLOCK_N=bn, WS=ws, num_warps=w, num_stages=st)
            run()
            err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
            ms = bench.time_ms(run)
            bench.add(section="dense", config=spec, ms=ms, tflops=flop / ms / 1e9, rel_l2=err)
        except Exception as e:  # a config that does not compile is a result too
            bench.add(section="dense", config=spec, error=f"{type(e).__name__}: {str(e)[:200]}")
    del q, k, v, ref


# --- sparse kernel ---------------------------------------------------------------------------------------

def sampled_reference(q, k, v, keep, row_sizes, col_sizes, rows_per_seq: int = 48, seed: int = 0):
    """fp32 attention of sampled rows of permuted (N, S, D) tensors over their kept key rows: (rows, ref)."""
    n, s, _ = q.shape
    g = torch.Generator(device=q.device).manual_seed(seed)
    rows = torch.randint(0, s, (n, rows_per_seq), device=q.device, generator=g)
    refs = []
    row_end = torch.cumsum(row_sizes.long(), -1)
    for i in range(n):
        cluster = torch.searchsorted(row_end[i], rows[i], right=True)
        mask = keep[i][cluster].repeat_interleave(col_sizes[i].long(), dim=1)  # (R, S)
        refs.append(masked_attention(q[i, rows[i]], k[i], v[i], mask))
    return rows, torch.stack(refs)


def structured_inputs(bench: Bench, scale: float = 0.8, seed: int = 0):
    from eval.synthetic import structured_qkv

    if bench.smoke:
        return structured_qkv(SMOKE["heads"], SMOKE["grid"], D, scale=scale, seed=seed, device="cpu",
                              dtype=torch.float32)
    shape = get_shape(SHAPE)
    return structured_qkv(shape.heads, shape.grid, D, scale=scale, seed=seed)


def svg2_plan(bench: Bench, q, k, v):
    """Block map and permuted q, k, v of a warm svg2 call (QC 300, KC 1000, top_p 0.9, 2 warm iterations)."""
    from svg2.methods import build_method
    from svg2.methods.svg2 import svg2_preset
    from svg2.timing import StageTimer

    cfg = svg2_preset(SHAPE).__dict__ | dict(dense_steps=0, dense_layers=0, check_finite=False, profile=False)
    if bench.smoke:
        cfg |= dict(num_q_clusters=SMOKE["qc"], num_k_clusters=SMOKE["kc"])
    m = build_method("svg2", **cfg)
    m(q, k, v)
    plan = m.plan(q, k, v, m.state.layer(0, 0), None, StageTimer(q.device, enabled=False))
    return m, plan


def run_sparse(bench: Bench, name: str, tensors, bm, configs: str, q_order=None, flat_q=None,
               q_order_configs: str = "") -> None:
    from svg2.kernels.varblock import config_name, make_plan, parse_config, tile_work, varblock_attention

    qp, kp, vp = tensors
    n, s, _ = qp.shape
    keep = bm.keep.reshape(n, *bm.keep.shape[-2:])
    rs, cs = bm.row_sizes.reshape(n, -1), bm.col_sizes.reshape(n, -1)
    kept = bm.kept_pairs().double().sum().item()
    density = kept / (n * s * s)
    rows, ref = sampled_reference(qp, kp, vp, keep, rs, cs)
    first = None
    for spec in configs.split(","):
        if bench.left() < 0:
            print(f"deadline: {name} {spec} skipped", flush=True)
            continue
        try:
            c = parse_config(spec)
            plan = make_plan(keep, rs, cs, s, c)
            work = tile_work(keep, rs, cs, c).sum().item() / kept
            out = torch.full_like(qp, float("nan"))
            varblock_attention(qp, kp, vp, keep, rs, cs, config=c, plan=plan, out=out)
            nan = out.isnan().any().item()
            got = out.gather(1, rows[..., None].expand(*rows.shape, D)).float()
            err = ((got - ref).norm() / ref.norm()).item()
            if first is None:
                first = out.clone()
            same = (out.float() - first.float()).abs().max().item()
            ms = bench.time_ms(lambda: varblock_attention(qp, kp, vp, keep, rs, cs, config=c, plan=plan, out=out))
            row = dict(section="sparse", plan=name, config=config_name(c), density=density, ms=ms,
                       tflops=4 * kept * D / ms / 1e9, work_over_kept=work, rel_l2=err, nan=nan, max_diff_first=same)
            if q_order is not None and spec in q_order_configs.split(","):
                # q read and the output written through the order: what the method runs
                ms_q = bench.time_ms(lambda: varblock_attention(flat_q, kp, vp, keep, rs, cs, config=c, plan=plan,
                                                                q_order=q_order, out=out))
                row.update(ms_q_order=ms_q, tflops_q_order=4 * kept * D / ms_q / 1e9)
            ms_plan = bench.time_ms(lambda: make_plan(keep, rs, cs, s, c))
            bench.add(**row, ms_plan=ms_plan)
            del out
        except Exception as e:
            traceback.print_exc()
            bench.add(section="sparse", plan=name, config=spec, error=f"{type(e).__name__}: {str(e)[:300]}")


def sparse(bench: Bench, svg2_configs: str, pos_configs: str, q_order_configs: str) -> None:
    from svg2.kernels.permute import gather_rows
    from svg2.methods import build_method
    from svg2.timing import StageTimer

    q, k, v = structured_inputs(bench)
    n, s = q.shape[1], q.shape[2]
    flat = [t.reshape(n, s, D) for t in (q, k, v)]
    t0 = time.time()
    m, plan = svg2_plan(bench, q, k, v)
    qo, ko = plan.q_perm.order, plan.k_perm.order
    permuted = (gather_rows(flat[0], qo), gather_rows(flat[1], ko), gather_rows(flat[2], ko))
    print(f"svg2 plan in {time.time() - t0:.1f} s", flush=True)
    run_sparse(bench, "svg2", permuted, plan.block_map, svg2_configs, q_order=qo, flat_q=flat[0],
               q_order_configs=q_order_configs)
    del permuted
    block = SMOKE["block"] if bench.smoke else 128
    pm = build_method("positional", block_size=block, top_k=round(0.25 * math.ceil(s / block)), top_p=None,
                      min_kc_ratio=0.0, check_finite=False, profile=False)
    pplan = pm.plan(q, k, v, pm.state.layer(0, 0), None, StageTimer(q.device, enabled=False))
    run_sparse(bench, "positional", flat, pplan.block_map, pos_configs)


# --- k-means ---------------------------------------------------------------------------------------------

def kmeans_section(bench: Bench, assign_configs: str) -> None:
    """Q300 + K1000, 2 warm iterations (assign, then the sorted update), per assignment tile config."""
    from svg2.kernels.kmeans import AssignConfig, assign_nearest
    from svg2.kmeans import kmeans_update

    q, k, _ = structured_inputs(bench)
    n, s = q.shape[1], q.shape[2]
    xq, xk = q.reshape(n, s, D), k.reshape(n, s, D)
    nq, nk = (SMOKE["qc"], SMOKE["kc"]) if bench.smoke else (300, 1000)
    g = torch.Generator(device=q.device).manual_seed(0)
    cq, ck = (x[:, torch.randperm(s, device=q.device, generator=g)[:c]].float() for x, c in ((xq, nq), (xk, nk)))
    for _ in range(10):  # warm centroids, as after a first call
        cq, _ = kmeans_update(xq, assign_nearest(xq, cq), cq)
        ck, _ = kmeans_update(xk, assign_nearest(xk, ck), ck)
    lab = assign_nearest(xk, ck)

    def two_iters(cfg):
        for x, c in ((xq, cq), (xk, ck)):
            for _ in range(2):
                c, _ = kmeans_update(x, assign_nearest(x, c, cfg), c)

    for spec in assign_configs.split(","):
        if bench.left() < 0:
            return
        f = {tok[0]: int(tok[1:]) for tok in spec.split()}
        cfg = AssignConfig(f["S"], f["K"], f["w"], f["s"])
        ms_a = bench.time_ms(lambda: assign_nearest(xk, ck, cfg))
        bench.add(section="kmeans", config=spec, ms=bench.time_ms(lambda: two_iters(cfg)), ms_assign_k1000=ms_a,
                  tflops_assign=2 * n * s * nk * D / ms_a / 1e9, ms_assign_q300=bench.time_ms(
                      lambda: assign_nearest(xq, cq, cfg)), ms_update_k1000=bench.time_ms(
                      lambda: kmeans_update(xk, lab, ck)), labels_equal_default=torch.equal(
                      assign_nearest(xk, ck, cfg), lab))


# --- density sweep ---------------------------------------------------------------------------------------

def density_sweep(bench: Bench, shapes: str) -> None:
    """Whole method calls (svg2: top_k 30..900 of 1000 key clusters, min_kc_ratio 0, 2 warm iterations;
    positional: top_k 5..90 % of its 128-token blocks) against cuDNN on the same structured inputs (scale 0.8,
    seed 2): the density where sparse stops paying."""
    from eval.synthetic import structured_qkv
    from svg2.attention import dense_attention
    from svg2.methods import build_method
    from svg2.methods.svg2 import svg2_preset

    for name in shapes.split(","):
        shape = get_shape(name)
        q, k, v = structured_qkv(shape.heads, shape.grid, D, scale=0.8, seed=2)
        ms_dense = bench.time_ms(lambda: dense_attention(q, k, v, "cudnn"))
        bench.add(section="density", shape=name, method="dense_cudnn", density=1.0, ms=ms_dense)
        nb = math.ceil(q.shape[2] / 128)
        runs = [("svg2", dict(svg2_preset(name).__dict__, top_k=t, top_p=None,
                              min_kc_ratio=0.0, dense_steps=0, dense_layers=0, check_finite=False, profile=False))
                for t in (30, 60, 100, 150, 250, 400, 600, 900)]
        runs += [("positional", dict(block_size=128, top_k=max(1, round(f * nb)), top_p=None, min_kc_ratio=0.0,
                                     check_finite=False, profile=False)) for f in (0.05, 0.15, 0.3, 0.5, 0.7, 0.9)]
        for method, cfg in runs:
            if bench.left() < 0:
                return
            m = build_method(method, **cfg)
            m(q, k, v)  # first call: 50 k-means iterations from the seeded init
            ms = bench.time_ms(lambda: m(q, k, v))
            bench.add(section="density", shape=name, method=method, top_k=cfg["top_k"],
                      density=m.stats[-1].as_row()["density"], ms=ms, over_dense=ms / ms_dense)
        del q, k, v


def break_even(rows: list[dict]) -> dict:
    """(shape, method) -> density where the call time crosses cuDNN's, linearly interpolated (None: never)."""
    out = {}
    for key in {(r["shape"], r["method"]) for r in rows if r.get("section") == "density" and "over_dense" in r}:
        pts = sorted((r["density"], r["over_dense"]) for r in rows
                     if r.get("section") == "density" and (r.get("shape"), r.get("method")) == key and "over_dense" in r)
        out[key] = None
        for (d0, t0), (d1, t1) in zip(pts, pts[1:]):
            if t0 <= 1.0 < t1:
                out[key] = d0 + (1.0 - t0) * (d1 - d0) / (t1 - t0)
    return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--sections", default="dense,sparse,kmeans,density")
    p.add_argument("--density-shapes", default="wan_t2v_14b_720p,wan_t2v_1.3b_480p")
    p.add_argument("--svg2-configs", default=SVG2_CONFIGS)
    p.add_argument("--pos-configs", default=POS_CONFIGS)
    p.add_argument("--q-order-configs", default=Q_ORDER_CONFIGS, help="svg2 configs also timed with q_order")
    p.add_argument("--dense-configs", default=DENSE_CONFIGS)
    p.add_argument("--assign-configs", default=ASSIGN_CONFIGS)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--deadline", type=float, default=250.0, help="seconds after which remaining configs are skipped")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (with TRITON_INTERPRET=1)")
    args = p.parse_args(argv)
    if args.smoke:
        args.svg2_configs = args.pos_configs = SMOKE["configs"]
        args.assign_configs = "S16 K16 w4 s1"
        args.sections = ",".join(x for x in args.sections.split(",") if x not in ("dense", "density"))
    elif not torch.cuda.is_available():
        raise SystemExit("eval.bench.kernels needs a CUDA device")
    bench = Bench(args.out, args.deadline, args.repeats, args.smoke)
    bench.add(section="env", gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              torch=torch.__version__, triton=triton.__version__,
              commit=os.environ.get("SVG2_COMMIT"))
    sections = args.sections.split(",")
    for name, fn in (("dense", lambda: dense_probe(bench, args.dense_configs)),
                     ("sparse", lambda: sparse(bench, args.svg2_configs, args.pos_configs, args.q_order_configs)),
                     ("kmeans", lambda: kmeans_section(bench, args.assign_configs)),
                     ("density", lambda: density_sweep(bench, args.density_shapes))):
        if name in sections:
            try:
                fn()
            except Exception:
                traceback.print_exc()
            torch.cuda.empty_cache()
    for (shape, method), dens in sorted(break_even(bench.rows).items()):
        bench.add(section="break_even", shape=shape, method=method, density=dens)
    print("\n== summary")
    for r in bench.rows[1:]:
        keys = [k for k in ("section", "plan", "shape", "method", "config", "top_k", "density", "ms", "tflops",
                            "rel_l2", "work_over_kept", "ms_q_order", "over_dense", "ms_assign_k1000", "ms_update_k1000",
                            "error") if k in r]
        print(" | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    return bench.rows


if __name__ == "__main__":
    main()
