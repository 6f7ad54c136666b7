"""Attention methods behind one interface: ``method(q, k, v, layer=, branch=, step=, grid=) -> out``."""
from __future__ import annotations

from svg2.methods.base import AttentionMethod, AttentionState, CallStats, DenseMethod, MethodConfig, Plan, execute_plan
from svg2.methods.positional import PositionalConfig, PositionalMethod
from svg2.methods.radial import RadialMethod
from svg2.methods.sta import STAMethod
from svg2.methods.svg1 import SVG1Method
from svg2.methods.svg2 import SVG2_PRESETS, SVG2Config, SVG2Method, svg2_preset

METHODS: dict[str, type[AttentionMethod]] = {m.name: m for m in (DenseMethod, PositionalMethod, SVG2Method)}
METHODS["svg1"] = SVG1Method
METHODS["sta"] = STAMethod
METHODS["radial"] = RadialMethod


def build_method(name: str, **config) -> AttentionMethod:
    """``build_method('svg2', top_p=0.95)``; unknown names and fields get errors listing the valid ones."""
    if name not in METHODS:
        raise ValueError(f"method={name!r}; expected one of {sorted(METHODS)}")
    cls = METHODS[name]
    fields = cls.Config.__dataclass_fields__
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ValueError(f"unknown {name} config fields {unknown}; expected some of {sorted(fields)}")
    return cls(**config)


__all__ = ["AttentionMethod", "AttentionState", "CallStats", "DenseMethod", "MethodConfig", "Plan", "execute_plan",
           "PositionalConfig", "PositionalMethod", "SVG2Config", "SVG2Method", "SVG2_PRESETS", "svg2_preset",
           "METHODS", "build_method"]
