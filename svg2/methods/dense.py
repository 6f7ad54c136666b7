"""Dense attention: the quality and speed reference of every comparison."""
from __future__ import annotations

from dataclasses import dataclass

from svg2.methods.base import AttentionMethod, MethodConfig
from svg2.methods.registry import register_method


@dataclass
class DenseConfig(MethodConfig):
    pass


@register_method
class DenseMethod(AttentionMethod):
    """Full attention with the fastest SDPA backend (cuDNN first on Hopper), or the one ``dense_backend`` names."""

    name = "dense"
    Config = DenseConfig
    order = 0

    @property
    def is_reference(self) -> bool:
        return self.config.dense_backend == "auto"

    def runs_dense(self, layer: int, step: int) -> bool:
        return True
