"""Adding a method is one module that registers itself plus one conf/method YAML: nothing in the harness names it.
Shown with a throw-away method written to a temporary module and a temporary config dir."""
import sys
import textwrap

import pandas as pd
import pytest

from eval.config import register_schemas
from eval.frontier import load_configs, report
from eval.reproduce import paper_tables
from eval.results import ResultStore
from svg2.methods import METHODS
from tests.eval.conftest import TINY, compose_config

MODULE = '''
from dataclasses import dataclass

import torch

from svg2.blocks import BlockMap
from svg2.methods import AttentionMethod, MethodConfig, register_method
from svg2.plan import Plan


@dataclass
class FirstBlocksConfig(MethodConfig):
    blocks: int = 4          # contiguous blocks per side
    keep_first: int = 1      # every query block attends the first keep_first key blocks

    def family(self) -> str:
        return f"{self.blocks} blocks"

    def budget_label(self) -> str:
        return f"first{self.keep_first}"


@register_method
class FirstBlocksMethod(AttentionMethod):
    name = "first_blocks"
    Config = FirstBlocksConfig
    order = 50

    def plan(self, q, k, v, layer_state, grid, timer):
        b, h, s, _ = q.shape
        n = self.config.blocks
        sizes = torch.full((b, h, n), s // n, dtype=torch.long, device=q.device)
        sizes[..., -1] += s - n * (s // n)
        keep = torch.zeros(b, h, n, n, dtype=torch.bool, device=q.device)
        keep[..., : self.config.keep_first] = True
        return Plan(BlockMap(keep, sizes, sizes))
'''

YAML = '''
defaults:
  - /schema/method/first_blocks@_here_
  - _self_
_target_: svg2.methods.build_method
name: first_blocks
'''


@pytest.fixture
def throwaway(tmp_path, monkeypatch):
    (tmp_path / "throwaway_method.py").write_text(MODULE)
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "first_blocks.yaml").write_text(textwrap.dedent(YAML))
    monkeypatch.syspath_prepend(str(tmp_path))
    before = dict(METHODS)
    import throwaway_method  # noqa: F401  (registers the method)

    register_schemas()
    yield tmp_path / "conf"
    METHODS.clear()
    METHODS.update(before)
    sys.modules.pop("throwaway_method", None)


def test_a_new_method_runs_through_the_sweep_tables_and_figures(throwaway, tmp_path, cache_dir):
    from eval.sweep import run

    results = tmp_path / "results"
    common = [*TINY, f"hydra.searchpath=[file://{throwaway}]", f"results_dir={results}", f"cache_dir={cache_dir}",
              "raise_errors=true"]
    with pytest.raises(Exception, match="keep_first"):  # typed like every method: bad values fail at compose
        compose_config(*common, "method=first_blocks", "method.keep_first=abc")
    for overrides in (["method=first_blocks", "method.keep_first=2"], ["method=dense"]):
        run(compose_config(*common, *overrides))
    rows = {r["method"]: r for r in ResultStore(results).rows()}
    new = rows["first_blocks"]
    assert new["status"] == "ok" and new["label"] == "first_blocks 4 blocks first2" and new["order"] == 50
    assert new["method.keep_first"] == 2 and 0 < new["sparse_density"] < 1 and not new["reference"]
    assert rows["dense"]["reference"]
    configs = load_configs(results)
    assert set(configs["label"]) == {"dense", "first_blocks 4 blocks first2"}
    plot, text = report(results, {"quality": ["psnr"], "cost": ["flops_ratio"]})
    assert plot.is_file() and "first_blocks 4 blocks first2" in text
    ((_, table),) = paper_tables(results)
    assert list(table["method"]) == ["dense", "first_blocks 4 blocks first2"]  # table order from the rows
    assert pd.read_csv(results / "results.csv")["method"].tolist().count("first_blocks") == 1


def test_no_harness_file_names_a_method():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "eval"
    files = [root / f for f in ("sweep.py", "reproduce.py", "frontier.py", "results.py", "config.py")]
    files += sorted((root / "workloads").glob("*.py"))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in METHODS, f"{path.name}:{node.lineno} names the method {node.value!r}"
