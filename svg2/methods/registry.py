"""The method registry: every method module registers its class with ``@register_method``; the harness builds
methods by name and reads labels, order and the reference from the classes, never from name strings."""
from __future__ import annotations

from dataclasses import fields

METHODS: dict[str, type] = {}

# The dense method every quality metric and speedup is measured against (``svg2.methods.dense``).
REFERENCE = "dense"


def register_method(cls):
    """Class decorator: ``METHODS[cls.name] = cls``; the config class learns its method's name (for labels)."""
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{cls.__name__}.name={name!r}; expected an identifier naming the method")
    if name in METHODS and METHODS[name] is not cls:
        raise ValueError(f"method {name!r} is registered twice: {METHODS[name].__qualname__} and {cls.__qualname__}")
    if "Config" not in cls.__dict__:
        raise ValueError(f"{cls.__name__} has no Config of its own; expected a dataclass subclass of MethodConfig")
    cls.Config.method = name
    METHODS[name] = cls
    return cls


def method_class(name: str) -> type:
    if name not in METHODS:
        raise ValueError(f"method={name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name]


def build_method(name: str, **config):
    """``build_method('svg2', top_p=0.95)``; unknown names and fields get errors listing the valid ones."""
    cls = method_class(name)
    known = {f.name for f in fields(cls.Config)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown {name} config fields {unknown}; expected some of {sorted(known)}")
    return cls(**config)


def reference_method():
    """The dense reference (fastest SDPA backend)."""
    return build_method(REFERENCE)


def method_preset(name: str, shape: str) -> dict:
    """The release's config values of a method for a model shape (``eval.shapes`` names); {} where it has none."""
    return dict(method_class(name).presets.get(shape, {}))
