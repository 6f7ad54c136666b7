"""Ulysses sequence parallelism in the tiny pipelines: generated over gloo ranks launched by torchrun (as users
launch), every rank's output equals the single-process generation with the same method and plan, at world size 2
on the tiny Wan, HunyuanVideo and CogVideoX pipelines (2 heads) and at world size 4 on 4-head ones; bad set-ups
raise errors that say what to change."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from svg2.diffusers import apply, load_pipeline, remove
from svg2.methods import build_method
from svg2.parallel import init_ranks

from tinypipes import build_with_heads, generate

ROOT = Path(__file__).resolve().parents[2]
RANKS = 4
TINY_SVG2 = dict(num_q_clusters=4, num_k_clusters=8, kmeans_iters_first=3, kmeans_iters_step=1, top_p=0.5)
METHODS = {"dense": {}, "positional": dict(block_size=8, top_p=0.5), "svg2": TINY_SVG2}
PAIRS = {"wan_t2v": [0, 1], "cogvideox": [0, 1], "hunyuan": [2, 3]}  # two pairs of ranks run at the same time
# 4-head pipelines for world size 4; the CogVideoX one with the RoPE tables the pipeline computes (split as they
# enter the transformer); the Wan one at 80x80, whose 75 tokens split unevenly (19, 19, 19, 18)
WIDE = {"wan_t2v_4heads": ("wan_t2v", {}, dict(height=80, width=80)),
        "cogvideox_4heads": ("cogvideox", dict(use_rotary_positional_embeddings=True), {})}
RUNS = [(kind, 2, m) for kind in PAIRS for m in METHODS] + [(name, RANKS, m) for name in WIDE for m in METHODS]


def run_name(pipeline, world, method):
    return f"{pipeline}_p{world}_{method}"


@pytest.fixture(scope="module")
def pipelines(tiny, tiny_dirs, tmp_path_factory):
    """name -> (kind, directory, extra call arguments) of every pipeline the ranks load."""
    for kind in PAIRS:
        tiny(kind)
    out = {kind: (kind, str(tiny_dirs[kind]), {}) for kind in PAIRS}
    for name, (kind, config, call) in WIDE.items():
        out[name] = (kind, str(build_with_heads(kind, tmp_path_factory.mktemp(name), 4, **config)), call)
    return out


@pytest.fixture(scope="module")
def launched(pipelines, tmp_path_factory):
    """Every run and error case on 4 gloo ranks, one torchrun launch; the folder of what each rank saved."""
    folder = tmp_path_factory.mktemp("ranks")
    runs = [dict(name=run_name(p, w, m), pipeline=p, method=m, config=METHODS[m], ranks=PAIRS.get(p, None))
            for p, w, m in RUNS]
    mismatched = {"0": TINY_SVG2, "1": {**TINY_SVG2, "top_p": 0.9}}
    errors = [dict(name="heads", pipeline="wan_t2v", method="dense", config={}),
              dict(name="mismatch", pipeline="hunyuan", method="svg2", config=mismatched, ranks=[2, 3])]
    cases = folder / "cases.json"
    cases.write_text(json.dumps(dict(pipelines=pipelines, runs=[{k: v for k, v in r.items() if v is not None}
                                                                for r in runs], errors=errors)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={RANKS}",
           "-m", "tests.diffusers.parallel_worker", str(cases), str(folder)]
    proc = subprocess.run(cmd, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return folder


@pytest.fixture(scope="module")
def single(pipelines):
    """(pipeline, method) -> the single-process generation and its method, computed once."""
    loaded, done = {}, {}

    def get(name, method):
        if (name, method) not in done:
            kind, path, call = pipelines[name]
            pipe = loaded.setdefault(name, load_pipeline(kind, path))
            m = build_method(method, **METHODS[method])
            apply(pipe, m)
            try:
                done[name, method] = generate(pipe, kind, **call), m
            finally:
                remove(pipe)
        return done[name, method]

    return get


def ranks_of(pipeline, world):
    return PAIRS.get(pipeline, range(world)) if world == 2 else range(world)


@pytest.mark.slow
@pytest.mark.parametrize("pipeline,world,method", RUNS, ids=[run_name(*r) for r in RUNS])
def test_parallel_generation_equals_single_process(launched, single, pipeline, world, method):
    ref, m = single(pipeline, method)
    saved = [torch.load(launched / f"{run_name(pipeline, world, method)}.rank{r}.pt") for r in ranks_of(pipeline, world)]
    assert len(saved) == world
    for rank in saved:
        torch.testing.assert_close(rank["frames"], ref, atol=1e-4, rtol=0)
        assert torch.equal(rank["frames"], saved[0]["frames"])  # every rank ends with the same video
        # state keyed as in one process: the same (layer, branch) keys, the same calls at the same steps
        assert rank["state"] == sorted(m.state.layers)
        assert [(s["step"], s["layer"], s["branch"]) for s in rank["stats"]] == \
               [(s.step, s.layer, s.branch) for s in m.stats]
    if method != "dense":  # the sparse plan really shapes the output the ranks reproduce
        assert max(s.as_row()["density"] for s in m.stats) < 1.0
        dense, _ = single(pipeline, "dense")
        assert (ref - dense).abs().max() > 1e-3


@pytest.mark.slow
def test_bad_setups_raise_on_every_rank(launched):
    for r in range(RANKS):  # world size 4 on a 2-head transformer
        assert (launched / f"heads.rank{r}.txt").read_text() == (
            "ValueError: 2 attention heads do not split over 4 ranks; Ulysses needs a head count divisible by the "
            "world size (world sizes [1, 2] fit)")
        assert "parallel.world_size=5 but the launcher started 4 ranks" in (
            launched / f"world_size.rank{r}.txt").read_text()
    for r in (2, 3):  # two ranks installing different methods
        text = (launched / f"mismatch.rank{r}.txt").read_text()
        assert text.startswith("ValueError: ranks disagree on what to install (method.top_p: rank 0 0.5, rank 1 0.9)")


def test_apply_without_a_process_group_says_how_to_launch(tiny):
    pipe = tiny("wan_t2v")
    with pytest.raises(RuntimeError, match="needs torch.distributed initialised: launch with torchrun"):
        apply(pipe, build_method("dense"), parallel="ulysses")
    with pytest.raises(ValueError, match="parallel='ring'; expected None, one of \\['ulysses'\\]"):
        apply(pipe, build_method("dense"), parallel="ring")
    assert all(not hasattr(t, "_svg2_sparse") for t in [pipe.transformer])  # nothing left half-installed


def test_init_ranks_names_the_missing_launcher_or_backend(monkeypatch):
    import torch.distributed as dist

    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match=re.escape("(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT unset); launch with "
                                                     "torchrun")):
        init_ranks("cpu")
    monkeypatch.setattr(dist, "is_nccl_available", lambda: False)
    with pytest.raises(RuntimeError, match="device='cuda:0' needs the nccl backend"):
        init_ranks("cuda:0")
