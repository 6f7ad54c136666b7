"""Pixel-statistics check that a clip follows its prompt: the subject's colour and motion direction.

No learned model: objects in the procedural data are saturated and backgrounds are not, so

- colour: among saturated, bright-enough pixels of all frames, the palette hue with the most pixels
  (the subject is drawn larger than the secondary objects, and they never share its colour);
- direction: the per-frame centroid of the pixels of that hue, fitted by a line over time; the larger
  displacement axis and its sign give left/right/up/down;
- speed and steadiness (not scored against the prompt): the slope of that line in pixels per frame, and how
  well the line explains the centroid's track (R², 1 for a subject that translates steadily; a subject that
  appears, vanishes or jumps between places scores low).

Chance is 1/6 for colour, 1/4 for direction and 1/24 for both.

    score = score_clip(frames, prompt)      # frames (T, H, W, 3) in [0, 1]
    score.colour_ok, score.direction_ok
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

import torch

from eval.default_model.procedural import COLOURS, DIRECTIONS

MIN_SATURATION = 0.5
MIN_VALUE = 0.25
MIN_PIXELS_PER_FRAME = 4
CHANCE = {"colour": 1 / len(COLOURS), "direction": 1 / len(DIRECTIONS),
          "both": 1 / (len(COLOURS) * len(DIRECTIONS))}

_PROMPT = re.compile(rf"^a ({'|'.join(COLOURS)}) .*?moves ({'|'.join(DIRECTIONS)})\b")


def parse_prompt(prompt: str) -> tuple[str, str]:
    """(colour, direction) of the prompt's subject."""
    m = _PROMPT.match(prompt)
    if m is None:
        raise ValueError(f"prompt {prompt!r} does not read 'a <colour> ... moves <direction> ...'; "
                         f"expected a procedural prompt (colours {list(COLOURS)}, directions {list(DIRECTIONS)})")
    return m.group(1), m.group(2)


def _hue(rgb: torch.Tensor) -> torch.Tensor:
    """Hue in degrees [0, 360) of (..., 3) colours."""
    r, g, b = rgb.unbind(-1)
    mx, mn = rgb.max(-1).values, rgb.min(-1).values
    d = (mx - mn).clamp_min(1e-6)
    h = torch.where(mx == r, ((g - b) / d) % 6, torch.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return h * 60


def colour_labels(frames: torch.Tensor) -> torch.Tensor:
    """(T, H, W) palette index of each saturated pixel, -1 for the rest (background, dark, grey)."""
    mx, mn = frames.max(-1).values, frames.min(-1).values
    saturated = ((mx - mn) >= MIN_SATURATION * mx.clamp_min(1e-6)) & (mx >= MIN_VALUE)
    palette = torch.tensor([_hue(torch.tensor(c)).item() for c in COLOURS.values()])
    dist = (_hue(frames)[..., None] - palette).abs()
    dist = torch.minimum(dist, 360 - dist)
    return torch.where(saturated, dist.argmin(-1), torch.full_like(mx, -1, dtype=torch.long))


@dataclass(frozen=True)
class ClipScore:
    colour: str  # detected
    direction: str  # detected; "" when the subject is not found in enough frames
    expected_colour: str
    expected_direction: str
    speed: float = 0.0  # detected subject's centroid speed, pixels per frame (0 when not found in 2 frames)
    steadiness: float = 0.0  # R² of the straight-line fit of its centroid track (0 when not found in 3 frames)

    @property
    def colour_ok(self) -> bool:
        return self.colour == self.expected_colour

    @property
    def direction_ok(self) -> bool:
        return self.direction == self.expected_direction

    @property
    def both_ok(self) -> bool:
        return self.colour_ok and self.direction_ok


def detect(frames: torch.Tensor) -> tuple[str, str]:
    """(dominant object colour, motion direction) of a clip (T, H, W, 3) in [0, 1]."""
    return detect_motion(frames)[:2]


class Motion(NamedTuple):
    colour: str
    direction: str  # "" when the subject is not found in enough frames
    speed: float  # pixels per frame, of the centroid's least-squares line
    steadiness: float  # R² of that line over the centroid's track (both axes); 0 with fewer than 3 frames


def detect_motion(frames: torch.Tensor) -> Motion:
    """``detect``'s colour and direction, plus the speed and steadiness of that colour's centroid."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames have shape {tuple(frames.shape)}; expected (T, H, W, 3)")
    frames = frames.float().cpu()
    labels = colour_labels(frames)
    counts = torch.bincount(labels[labels >= 0], minlength=len(COLOURS))
    colour_id = int(counts.argmax())
    mask = (labels == colour_id).float()  # (T, H, W)
    n = mask.sum((1, 2))
    T, H, W = mask.shape
    ys, xs = torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32)
    cx = (mask.sum(1) * xs).sum(1) / n.clamp_min(1)
    cy = (mask.sum(2) * ys).sum(1) / n.clamp_min(1)
    seen = n >= MIN_PIXELS_PER_FRAME
    name = list(COLOURS)[colour_id]
    if seen.sum() < 2:
        return Motion(name, "", 0.0, 0.0)
    t = torch.arange(T, dtype=torch.float32)[seen]
    t = t - t.mean()
    px, py = cx[seen] - cx[seen].mean(), cy[seen] - cy[seen].mean()
    vx = (t * px).sum() / (t * t).sum()  # least-squares slopes, pixels per frame
    vy = (t * py).sum() / (t * t).sum()
    if vx.abs() >= vy.abs():
        direction = "right" if vx > 0 else "left"
    else:
        direction = "down" if vy > 0 else "up"
    spread = (px * px + py * py).sum()
    residual = ((px - vx * t) ** 2 + (py - vy * t) ** 2).sum()
    steadiness = float(1 - residual / spread) if seen.sum() >= 3 and spread > 1e-6 else 0.0
    return Motion(name, direction, float(torch.hypot(vx, vy)), steadiness)


def score_clip(frames: torch.Tensor, prompt: str) -> ClipScore:
    colour, direction = parse_prompt(prompt)
    got = detect_motion(frames)
    return ClipScore(got.colour, got.direction, colour, direction, got.speed, got.steadiness)


def summarise(scores: list[ClipScore]) -> dict[str, float]:
    """Accuracies over clips, with the chance level of each."""
    if not scores:
        raise ValueError("summarise got no scores; expected at least one ClipScore")
    n = len(scores)
    return {"clips": n,
            "colour_acc": sum(s.colour_ok for s in scores) / n,
            "direction_acc": sum(s.direction_ok for s in scores) / n,
            "both_acc": sum(s.both_ok for s in scores) / n,
            "subject_speed": sum(s.speed for s in scores) / n,  # pixels per frame; procedural clips: ~1.7 at 64 px
            "subject_steadiness": sum(s.steadiness for s in scores) / n,  # R² of the centroid's straight line
            **{f"{k}_chance": v for k, v in CHANCE.items()}}
