"""One rank of the Ulysses tests, launched by ``test_parallel.py`` as users launch (torchrun, gloo):

    python -m torch.distributed.run --standalone --nproc-per-node=4 -m tests.diffusers.parallel_worker CASES OUT

CASES is a JSON file: {"pipelines": {name: [kind, dir, call arguments]}, "runs": [{"name", "pipeline", "ranks",
"method", "config"}], "errors": [...]}. Each run generates with sparse attention installed under Ulysses over the listed
ranks (pairs of ranks run their cases at the same time) and saves every rank's frames and call statistics to
OUT/<name>.rank<r>.pt; each error case saves the error every rank raised.
"""
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from svg2.diffusers import apply, load_pipeline, remove
from svg2.methods import build_method
from svg2.parallel import Ulysses, init_ranks
from tests.diffusers.tinypipes import generate


def main(cases_file: str, out: str) -> None:
    torch.set_num_threads(1)
    world = init_ranks("cpu", world_size=int(os.environ["WORLD_SIZE"]))
    cases = json.loads(Path(cases_file).read_text())
    out = Path(out)
    groups = {}
    for case in cases["runs"] + cases["errors"]:  # every rank creates every group, in the same order
        ranks = tuple(case.get("ranks", range(world.world_size)))
        if ranks not in groups:
            groups[ranks] = dist.new_group(list(ranks)) if len(ranks) < world.world_size else None
    pipes = {}

    def pipeline(name):
        if name not in pipes:
            kind, path, call = cases["pipelines"][name]
            pipes[name] = (load_pipeline(kind, path), kind, call)
        return pipes[name]

    for case in cases["runs"]:
        ranks = tuple(case.get("ranks", range(world.world_size)))
        if world.rank not in ranks:
            continue
        pipe, kind, call = pipeline(case["pipeline"])
        method = build_method(case["method"], **case["config"])
        apply(pipe, method, parallel=Ulysses.over(groups[ranks]))
        try:
            frames = generate(pipe, kind, **call)
        finally:
            remove(pipe)
        torch.save(dict(frames=frames, stats=[s.as_row() for s in method.stats], state=sorted(method.state.layers)),
                   out / f"{case['name']}.rank{world.rank}.pt")
    for case in cases["errors"]:
        ranks = tuple(case.get("ranks", range(world.world_size)))
        if world.rank not in ranks:
            continue
        pipe, kind, call = pipeline(case["pipeline"])
        config = case["config"][str(ranks.index(world.rank))] if "0" in case["config"] else case["config"]
        try:
            apply(pipe, build_method(case["method"], **config), parallel=Ulysses.over(groups[ranks]))
            generate(pipe, kind, steps=1, **call)
            error = None
        except (ValueError, RuntimeError) as e:
            error = f"{type(e).__name__}: {e}"
        finally:
            remove(pipe)
        (out / f"{case['name']}.rank{world.rank}.txt").write_text(str(error))
    try:
        init_ranks("cpu", world_size=world.world_size + 1)
    except ValueError as e:
        (out / f"world_size.rank{world.rank}.txt").write_text(str(e))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
