from pathlib import Path

import pytest
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from eval.models import ModelConfig
from eval.sweep import build, method_configs
from svg2.methods import METHODS
from tests.eval.conftest import CONF, compose_config


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_its_options():
    assert options("method") == ["dense", "positional", "svg2"]
    assert {"default", "tiny", "wan_t2v_1.3b", "wan_t2v_14b", "wan_i2v_14b", "hunyuan", "cogvideox"} <= set(
        options("model"))
    assert {"quick", "wan_t2v_720p", "wan_i2v_720p", "hunyuan_720p"} <= set(options("sweep"))
    assert options("workload") == ["attention", "video"]


@pytest.mark.parametrize("group", ["method", "model", "workload", "metrics", "sweep", "experiment", "debug"])
def test_every_config_composes_and_resolves(group):
    for option in options(group):
        extra = ["model.path=/x", "model.image=/x.png"]
        cfg = compose_config(f"{group}={option}", *extra)
        OmegaConf.resolve(cfg)
        ModelConfig(**OmegaConf.to_container(cfg.model))
        instantiate(cfg.workload)
        for m in method_configs(cfg):
            method = build(m)
            assert isinstance(method, METHODS[m["name"]])


def test_method_group_builds_through_build_method_with_every_field():
    cfg = compose_config("method=svg2", "method.top_p=0.8", "model=wan_t2v_14b", "model.path=/x")
    (m,) = method_configs(cfg)
    method = build(m)
    assert method.config.top_p == 0.8 and method.config.num_q_clusters == 300
    assert set(m) - {"_target_", "name"} == set(type(method.config).__dataclass_fields__)


def test_sweep_list_entries_merge_over_the_method_group():
    cfg = compose_config("sweep=hunyuan_720p", "model.path=/x")
    svg2 = [m for m in method_configs(cfg) if m["name"] == "svg2"]
    assert {m["num_q_clusters"] for m in svg2} == {400} and {m["top_p"] for m in svg2} == {0.9, 0.75}
    assert all(m["dense_steps"] == 0.2 and m["dense_layers"] == 1 for m in svg2)


def test_bad_override_lists_valid_choices():
    with pytest.raises(HydraException) as err:
        compose_config("method=svg3")
    assert "Available options" in str(err.value)
    assert all(name in str(err.value) for name in ("dense", "positional", "svg2"))


def test_unknown_method_field_is_named():
    cfg = compose_config("method=svg2", "+method.num_clusters=3")
    with pytest.raises(ValueError, match=r"unknown svg2 config fields \['num_clusters'\]"):
        build(method_configs(cfg)[0])


def test_real_models_need_a_path():
    cfg = compose_config("model=wan_t2v_14b")
    assert OmegaConf.is_missing(cfg.model, "path")


def test_default_model_path_is_the_shipped_model_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_config()
    path = Path(OmegaConf.to_container(cfg.model, resolve=True)["path"])
    assert path == CONF.parent / "eval" / "default_model" / "model"
    assert cfg.sweep.name == "quick" and cfg.get("method") is None
