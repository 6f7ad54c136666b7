"""The block budget shared by every selection policy: top-p mass or top-k count, with a floor."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from svg2.checks import check_fraction, check_int
from svg2.methods.base import MethodConfig


@dataclass
class BudgetConfig(MethodConfig):
    budget_fields: ClassVar[tuple[str, ...]] = ("top_p", "top_k")

    top_p: float | None = 0.9    # keep the smallest set of key clusters holding this attention mass
    top_k: int | None = None     # or the k heaviest key clusters (set top_p to None)
    min_kc_ratio: float = 0.10   # never fewer than int(min_kc_ratio * KC) key clusters

    def check_budget(self) -> None:
        if (self.top_p is None) == (self.top_k is None):
            raise ValueError(f"top_p={self.top_p!r}, top_k={self.top_k!r}; set exactly one budget")
        if self.top_p is not None:
            check_fraction("top_p", self.top_p)
        else:
            check_int("top_k", self.top_k, minimum=1)
        check_fraction("min_kc_ratio", self.min_kc_ratio, allow_zero=True)

    def budget(self) -> dict:
        return dict(top_p=self.top_p, top_k=self.top_k, min_kc_ratio=self.min_kc_ratio)

    def budget_label(self) -> str:
        return f"p{self.top_p}" if self.top_p is not None else f"k{self.top_k}"
