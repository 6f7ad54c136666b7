"""Method configs for Hydra: every registered method's dataclass is the schema of its ``conf/method/<name>.yaml``
(stored in Hydra's ConfigStore as ``schema/method/<name>``), so the YAML holds only ``_target_``, ``name`` and
interpolations, ``method.top_p=0.8`` works without ``+`` and ``method.top_p=abc`` fails at compose time naming
the field. Defaults live in the dataclass alone."""
from __future__ import annotations

from dataclasses import field, fields, make_dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from svg2.methods import METHODS

CONF = Path(__file__).resolve().parent.parent / "conf"
TARGET = "svg2.methods.build_method"
_SCHEMAS: dict[str, type] = {}


def schema(name: str) -> type:
    """The structured-config class of a method: its Config dataclass plus ``_target_`` and ``name``."""
    cls = METHODS[name]
    if name not in _SCHEMAS or _SCHEMAS[name].__bases__[0] is not cls.Config:
        _SCHEMAS[name] = make_dataclass(f"{cls.Config.__name__}Schema", [
            ("_target_", str, field(default=TARGET)), ("name", str, field(default=name))], bases=(cls.Config,))
    return _SCHEMAS[name]


def register_schemas() -> None:
    """Store every registered method's schema (call again after registering a method at run time)."""
    store = ConfigStore.instance()
    for name in METHODS:
        store.store(group="schema/method", name=name, node=schema(name))


def method_configs(cfg: DictConfig) -> list[dict]:
    """Resolved method configs of this job: the ``method`` group if chosen, else every ``sweep.methods`` entry
    merged over its ``conf/method/<name>.yaml`` and schema (so entries are type-checked like overrides)."""
    if cfg.get("method") is not None:
        return [OmegaConf.to_container(cfg.method, resolve=True)]
    entries = cfg.sweep.get("methods") or []
    if not entries:
        raise ValueError("no method to run: pass method=<name> or choose a sweep preset with sweep.methods")
    out = []
    for entry in entries:
        name = entry.get("name")
        if name not in METHODS:
            raise ValueError(f"sweep.methods entry {OmegaConf.to_container(entry)} has name={name!r}; "
                             f"expected one of {sorted(METHODS)}")
        for one in expand_budgets(OmegaConf.to_container(entry), METHODS[name].Config):
            root = cfg.copy()
            with open_dict(root):
                root.method = OmegaConf.merge(method_node(name), one)
            out.append(OmegaConf.to_container(root.method, resolve=True))
    return out


def expand_budgets(entry: dict, config_cls: type) -> list[dict]:
    """An entry whose budget field holds a list (``top_p: [0.5, 0.7, 0.9]``) stands for one config per value: a
    method's budget curve in one line. A knob whose value is itself a sequence (its default is a tuple) takes a
    list of such values (``window: [[3, 3, 3], [5, 3, 3]]``); one value (``window: [3, 3, 5]``) is one config."""
    sequence = {f.name for f in fields(config_cls) if isinstance(f.default, (tuple, list))}

    def is_curve(name: str) -> bool:
        value = entry.get(name)
        if not isinstance(value, list):
            return False
        return name not in sequence or (bool(value) and all(isinstance(v, list) for v in value))

    lists = [f for f in config_cls.budget_fields if is_curve(f)]
    if not lists:
        return [entry]
    if len(lists) > 1:
        raise ValueError(f"sweep.methods entry {entry} lists values for {lists}; expected one budget field per entry")
    return [{**entry, lists[0]: value} for value in entry[lists[0]]]


def method_node(name: str) -> DictConfig:
    """Schema + ``conf/method/<name>.yaml`` (without its defaults list), unresolved."""
    node = OmegaConf.structured(schema(name))
    path = CONF / "method" / f"{name}.yaml"
    if path.is_file():
        own = OmegaConf.load(path)
        own.pop("defaults", None)
        node = OmegaConf.merge(node, own)
    return node


def build(node):
    """The object of a resolved config with a ``_target_`` (a method: ``svg2.methods.build_method``; a workload),
    raising the object's own error, which names the bad value, rather than Hydra's wrapper around it."""
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as e:
        if isinstance(e.__cause__, (ValueError, TypeError)):
            raise e.__cause__ from None
        raise


register_schemas()
