from dataclasses import fields
from pathlib import Path

import pytest
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from eval.config import build, method_configs
from eval.models import ModelConfig
from svg2.methods import METHODS
from tests.eval.conftest import CONF, compose_config


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def field_names(config_cls):
    return {f.name for f in fields(config_cls)}


def test_every_registered_method_has_a_config_and_every_config_a_method():
    assert options("method") == sorted(METHODS)
    assert {"default", "tiny", "wan_t2v_1.3b", "wan_t2v_14b", "wan_i2v_14b", "hunyuan", "cogvideox"} <= set(
        options("model"))
    assert {"quick", "wan_t2v_720p_paper", "wan_i2v_720p_paper", "hunyuan_720p_paper", "wan_t2v_720p_script",
            "hunyuan_720p_script"} <= set(options("sweep"))
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


def test_method_group_holds_every_dataclass_field_with_the_dataclass_defaults():
    cfg = compose_config("method=svg2", "method.top_p=0.8", "model=wan_t2v_14b", "model.path=/x")
    (m,) = method_configs(cfg)
    method = build(m)
    assert method.config.top_p == 0.8 and method.config.num_q_clusters == 300
    assert set(m) - {"_target_", "name"} == field_names(type(method.config))
    defaults = METHODS["svg2"].Config()
    assert m["kmeans_iters_step"] == defaults.kmeans_iters_step and m["min_kc_ratio"] == defaults.min_kc_ratio


def test_the_yaml_holds_no_default_of_its_own():
    # The dataclass is the one source of defaults: a method YAML sets only _target_, name, its schema and
    # interpolations of other groups (model sizes, the sweep's warm-up protocol).
    for name in METHODS:
        own = OmegaConf.load(CONF / "method" / f"{name}.yaml")
        for key, value in OmegaConf.to_container(own, resolve=False).items():
            if key in ("_target_", "name", "defaults"):
                continue
            assert isinstance(value, str) and value.startswith("${"), f"{name}.yaml sets {key}={value!r}"


def test_bad_override_type_fails_at_compose_time_naming_the_field():
    with pytest.raises(HydraException) as err:
        compose_config("method=svg2", "method.top_p=abc")
    text = f"{err.value} {err.value.__cause__}"
    assert "method.top_p" in text and "abc" in text


def test_unknown_method_field_is_named():
    with pytest.raises(HydraException, match="method.num_clusters"):
        compose_config("method=svg2", "method.num_clusters=3")
    cfg = compose_config("method=svg2", "+method.num_clusters=3")  # forced in with +: the build names it
    with pytest.raises(ValueError, match=r"unknown svg2 config fields \['num_clusters'\]"):
        build(method_configs(cfg)[0])


def test_sweep_list_entries_are_type_checked_and_merge_over_the_method_group():
    cfg = compose_config("sweep=hunyuan_720p_paper", "model.path=/x")
    methods = {m["name"]: m for m in method_configs(cfg)}
    assert set(methods) == {"dense", "sparge", "xattention", "svg1", "svg2"}
    assert methods["svg2"]["num_q_clusters"] == 400 and methods["xattention"]["stride"] == 8
    assert all(m["dense_steps"] == 0.3 and m["dense_layers"] == 0 for n, m in methods.items() if n != "dense")
    bad = compose_config("sweep.methods=[{name: svg2, top_p: abc}]")
    with pytest.raises(Exception, match="top_p"):
        method_configs(bad)


def test_bad_method_choice_lists_valid_choices():
    with pytest.raises(HydraException) as err:
        compose_config("method=svg3")
    assert "Available options" in str(err.value)
    assert all(name in str(err.value) for name in METHODS)


def test_real_models_need_a_path():
    cfg = compose_config("model=wan_t2v_14b")
    assert OmegaConf.is_missing(cfg.model, "path")


def test_unknown_model_kind_names_the_known_ones():
    cfg = compose_config("model.kind=sora")
    with pytest.raises(ValueError, match=r"kind='sora'; expected one of \['cogvideox', 'hunyuan', 'wan_i2v'"):
        ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))


def test_default_model_path_is_the_shipped_model_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_config()
    path = Path(OmegaConf.to_container(cfg.model, resolve=True)["path"])
    assert path == CONF.parent / "eval" / "default_model" / "model"
    assert cfg.sweep.name == "quick" and cfg.get("method") is None


@pytest.mark.parametrize("preset,steps,qc,dense_steps,dense_layers,zero_step", [
    ("wan_t2v_720p_script", 50, 300, 0.2, 1, False), ("wan_i2v_720p_script", 40, 300, 0.35, 1, False),
    ("wan_i2v_480p_script", 40, 200, 0.2, 1, True), ("hunyuan_720p_script", 50, 400, 0.1, 1, True),
    ("hunyuan_480p_script", 50, 200, 0.04, 0, True)])
def test_script_presets_are_the_reference_scripts(preset, steps, qc, dense_steps, dense_layers, zero_step):
    # Sparse-VideoGen 5ce7b01 scripts/*/..._sap.sh, with the reference's rules (upstream=true)
    cfg = compose_config(f"sweep={preset}", "model.path=/x", "model.image=/x.png")
    dense, svg2 = (build(m) for m in method_configs(cfg))
    c = svg2.config
    assert dense.is_reference and cfg.model.steps == steps
    assert (c.num_q_clusters, c.num_k_clusters, c.top_p, c.min_kc_ratio) == (qc, 1000, 0.9, 0.1)
    assert (c.kmeans_iters_first, c.kmeans_iters_step, c.dense_steps, c.dense_layers) == (50, 2, dense_steps, dense_layers)
    assert c.zero_step_kmeans == zero_step and (c.dense_rounding, c.share_cfg_state, c.centroid_dtype) == (
        "floor", True, "input")
