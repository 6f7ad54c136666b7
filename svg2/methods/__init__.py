"""Attention methods behind one interface: ``method(q, k, v, layer=, branch=, step=, grid=) -> out``.

Every module of this package that defines a method registers it (``@register_method``) and is imported here, so
adding ``svg2/methods/<name>.py`` is enough for ``build_method('<name>')``.
"""
from __future__ import annotations

import importlib
import pkgutil

from svg2.methods.base import AttentionMethod, AttentionState, CallStats, LayerState, MethodConfig
from svg2.methods.registry import (METHODS, REFERENCE, build_method, method_class, method_preset, reference_method,
                                   register_method)

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

from svg2.methods.dense import DenseMethod  # noqa: E402
from svg2.methods.positional import PositionalConfig, PositionalMethod  # noqa: E402
from svg2.methods.svg2 import SVG2_PRESETS, SVG2Config, SVG2Method, svg2_preset  # noqa: E402

__all__ = ["AttentionMethod", "AttentionState", "CallStats", "DenseMethod", "LayerState", "METHODS", "MethodConfig",
           "PositionalConfig", "PositionalMethod", "REFERENCE", "SVG2Config", "SVG2Method", "SVG2_PRESETS",
           "build_method", "method_class", "method_preset", "reference_method", "register_method", "svg2_preset"]
