"""Procedural video clips with prompts, deterministic from a seed.

A clip is one main object (the prompt's subject: colour, texture, shape, screen-space motion left/right/up/down,
optionally spinning, growing or shrinking), up to two small secondary objects of other colours, and a moving
low-saturation background (gradient, stripes, checkerboard or clouds), sometimes with a camera pan that carries
the background and the secondary objects. Objects are saturated and backgrounds are not, which is what lets a
pixel-statistics detector (eval/default_model/detector.py) find the subject's colour and motion.

``trail=True`` (an experiment, off by default) makes the subject leave a fading trail (``TRAIL``: faint copies
of itself behind it along its heading), so that each frame on its own shows which way it goes. Fine-tuning on
such clips did not teach the model to follow the direction word; more training at high noise levels did
(eval/default_model/MODEL_CARD.md).

    spec = sample_spec(seed)              # ClipSpec: attributes + per-frame trajectories, from numpy only
    frames = render([spec])               # (1, T, H, W, 3) float32 in [0, 1], torch, any device
    spec.prompt                           # "a red striped square moves left while spinning over a blue gradient"

Rendering is batched (one call for a training batch, on the GPU if asked) and anti-aliased through signed
distances, so edges and textures carry detail that sparse attention can damage visibly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

FRAMES, HEIGHT, WIDTH = 16, 64, 64

COLOURS: dict[str, tuple[float, float, float]] = {  # saturated, hues 60 degrees apart
    "red": (0.92, 0.12, 0.10),
    "yellow": (0.95, 0.85, 0.12),
    "green": (0.12, 0.80, 0.20),
    "cyan": (0.10, 0.80, 0.90),
    "blue": (0.15, 0.25, 0.95),
    "magenta": (0.88, 0.15, 0.85),
}
SHAPES = ("square", "circle", "triangle", "diamond", "ring", "cross")
TEXTURES = ("plain", "striped", "checkered", "dotted")
DIRECTIONS: dict[str, tuple[float, float]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
ACTIONS = ("", "spinning", "growing", "shrinking")
BACKGROUNDS = ("gradient", "stripes", "checkerboard", "clouds")
MAX_OBJECTS = 3  # main + up to two secondary
PAN_PROBABILITY = 0.3
# "full": everything above; "simple": the same subject (same draws) with no pan, no secondary objects and a
# gradient background -- a diagnostic data set, to tell a model that cannot learn motion from one that cannot
# learn it amid textured, panning scenes in the same training budget.
SCENES = ("full", "simple")
# The subject's trail: (distance behind its centre in radii, opacity) of each faint copy, drawn farthest first.
TRAIL = ((1.2, 0.12), (0.8, 0.25), (0.4, 0.45))


@dataclass(frozen=True)
class ObjectTrack:
    shape: str
    texture: str
    colour: str
    x: np.ndarray  # (T,) centre in pixels
    y: np.ndarray  # (T,)
    angle: np.ndarray  # (T,) radians
    radius: np.ndarray  # (T,) pixels
    texture_period: float  # in units of the radius


@dataclass(frozen=True)
class ClipSpec:
    seed: int
    main: ObjectTrack
    direction: str
    action: str
    secondary: tuple[ObjectTrack, ...]
    background: str
    background_colour: str
    background_angle: float
    background_period: float  # pixels
    background_offset: np.ndarray  # (T, 2) pattern offset in pixels (drift + pan)
    background_light: tuple[float, float]  # (dark, light) value range
    cloud_waves: np.ndarray  # (3, 3): angle, period, phase of the cloud sinusoids
    pan: str  # "" or a direction: the camera pans that way, so the world moves the other way
    trail: bool = False  # the subject leaves a fading trail along its heading (module doc)
    frames: int = FRAMES
    height: int = HEIGHT
    width: int = WIDTH

    @property
    def prompt(self) -> str:
        return make_prompt(self)


def make_prompt(spec: ClipSpec) -> str:
    m = spec.main
    texture = "" if m.texture == "plain" else f"{m.texture} "
    words = [f"a {m.colour} {texture}{m.shape} moves {spec.direction}"]
    if spec.action:
        words.append(f"while {spec.action}")
    if spec.secondary:
        others = " and ".join(f"a small {o.colour} {o.shape}" for o in spec.secondary)
        words.append(f"past {others}")
    article = "" if spec.background.endswith("s") else "a "  # stripes, clouds
    words.append(f"over {article}{spec.background_colour} {spec.background}")
    if spec.pan:
        words.append(f"as the camera pans {spec.pan}")
    return " ".join(words)


def vocabulary() -> list[str]:
    """Every word a prompt can contain, for building the tokenizer."""
    words = {"a", "moves", "while", "past", "small", "and", "over", "as", "the", "camera", "pans"}
    for group in (COLOURS, SHAPES, TEXTURES, DIRECTIONS, ACTIONS, BACKGROUNDS):
        words.update(w for w in group if w)
    return sorted(words)


def _track(rng, t, shape, texture, colour, start, velocity, radius0, growth, angle0, spin) -> ObjectTrack:
    return ObjectTrack(shape=shape, texture=texture, colour=colour,
                       x=(start[0] + velocity[0] * t).astype(np.float32),
                       y=(start[1] + velocity[1] * t).astype(np.float32),
                       angle=(angle0 + spin * t).astype(np.float32),
                       radius=(radius0 * growth ** (t / max(t[-1], 1))).astype(np.float32),
                       texture_period=float(rng.uniform(0.45, 0.8)))


def sample_spec(seed: int, frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH,
                scene: str = "full", trail: bool = False) -> ClipSpec:
    """All randomness of a clip, drawn from ``numpy.random.default_rng(seed)``; ``scene`` one of SCENES;
    ``trail`` draws nothing (the same seed gives the same clip with or without the subject's trail)."""
    if seed < 0:
        raise ValueError(f"seed={seed}; expected a non-negative integer")
    if scene not in SCENES:
        raise ValueError(f"scene={scene!r}; expected one of {SCENES}")
    if frames < 2 or height < 32 or width < 32:
        raise ValueError(f"clip size {frames}x{height}x{width}; expected >= 2 frames and >= 32x32 pixels")
    rng = np.random.default_rng(seed)
    t = np.arange(frames, dtype=np.float64)
    colour_names = list(COLOURS)
    size = min(height, width)

    # main object: travels ~40% of the frame along its direction, drifts a little across it
    direction = str(rng.choice(list(DIRECTIONS)))
    action = str(rng.choice(ACTIONS, p=[0.4, 0.2, 0.2, 0.2]))
    radius0 = rng.uniform(0.13, 0.19) * size
    growth = {"growing": rng.uniform(1.3, 1.5), "shrinking": 1 / rng.uniform(1.3, 1.5)}.get(action, 1.0)
    spin = rng.choice([-1, 1]) * rng.uniform(0.12, 0.3) if action == "spinning" else 0.0
    dx, dy = DIRECTIONS[direction]
    travel = rng.uniform(0.35, 0.45) * size
    speed = travel / (frames - 1)
    drift = rng.uniform(-0.05, 0.05) * size / (frames - 1)
    velocity = (dx * speed + dy * drift, dy * speed + dx * drift)
    centre = np.array([width / 2, height / 2]) + rng.uniform(-0.08, 0.08, 2) * size
    start = centre - np.array(velocity) * (frames - 1) / 2
    main_colour = str(rng.choice(colour_names))
    main = _track(rng, t, str(rng.choice(SHAPES)), str(rng.choice(TEXTURES)), main_colour, start, velocity,
                  radius0, growth, rng.uniform(0, 2 * math.pi), spin)

    # camera pan: the background and the secondary objects move opposite to the pan
    pan = str(rng.choice(list(DIRECTIONS))) if rng.random() < PAN_PROBABILITY else ""
    pan = pan if scene == "full" else ""
    world_velocity = np.zeros(2)
    if pan:
        px, py = DIRECTIONS[pan]
        world_velocity = -np.array([px, py]) * rng.uniform(0.6, 1.2)

    others = [c for c in colour_names if c != main_colour]
    secondary = []
    for _ in range(int(rng.integers(0, MAX_OBJECTS)) if scene == "full" else 0):
        colour = others.pop(int(rng.integers(len(others))))
        own = rng.uniform(-0.4, 0.4, 2)
        pos = rng.uniform(0.15, 0.85, 2) * np.array([width, height])
        secondary.append(_track(rng, t, str(rng.choice(SHAPES)), "plain", colour, pos, own + world_velocity,
                                rng.uniform(0.05, 0.075) * size, 1.0, rng.uniform(0, 2 * math.pi),
                                rng.uniform(-0.1, 0.1)))

    background = str(rng.choice(BACKGROUNDS)) if scene == "full" else "gradient"
    period = {"gradient": rng.uniform(1.5, 2.5) * size, "stripes": rng.uniform(7, 14),
              "checkerboard": rng.uniform(10, 18), "clouds": 1.0}[background]
    own_drift = rng.uniform(-0.3, 0.3, 2)
    offset = (own_drift[None, :] - world_velocity[None, :]) * t[:, None]  # pattern coordinates = pixel + offset
    dark = rng.uniform(0.15, 0.35)
    waves = np.stack([rng.uniform(0, 2 * math.pi, 3), rng.uniform(16, 48, 3), rng.uniform(0, 2 * math.pi, 3)], 1)
    return ClipSpec(seed=seed, main=main, direction=direction, action=action, secondary=tuple(secondary),
                    background=background, background_colour=str(rng.choice(colour_names)),
                    background_angle=float(rng.uniform(0, 2 * math.pi)), background_period=float(period),
                    background_offset=offset.astype(np.float32),
                    background_light=(float(dark), float(dark + rng.uniform(0.3, 0.5))),
                    cloud_waves=waves.astype(np.float32), pan=pan, trail=trail, frames=frames, height=height,
                    width=width)


# ---------------------------------------------------------------- rendering

def _shape_sdf(shape_id: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance (in radius units, negative inside) of each shape, selected per object."""
    au, av = u.abs(), v.abs()
    r = torch.sqrt(u * u + v * v)
    sdfs = {
        "square": torch.maximum(au, av) - 0.8,
        "circle": r - 1.0,
        "triangle": torch.maximum(-0.5 - v, (math.sqrt(3) * au + v - 1.0) / 2),
        "diamond": (au + av - 1.0) / math.sqrt(2),
        "ring": torch.maximum(r - 1.0, 0.55 - r),
        "cross": torch.minimum(torch.maximum(au - 0.33, av - 1.0), torch.maximum(av - 0.33, au - 1.0)),
    }
    out = torch.empty_like(u)
    for i, name in enumerate(SHAPES):
        out = torch.where(shape_id == i, sdfs[name], out)
    return out


def _texture(texture_id: torch.Tensor, u: torch.Tensor, v: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    """Brightness pattern in [0, 1] in the object's own frame (it rotates and scales with the object)."""
    w = 2 * math.pi / period
    soft = lambda s: torch.clamp(0.5 + 4 * s, 0, 1)  # noqa: E731 -- a soft square wave
    patterns = {
        "plain": torch.ones_like(u),
        "striped": soft(torch.sin(w * u)),
        "checkered": soft(torch.sin(w * u) * torch.sin(w * v)),
        "dotted": 1 - soft(torch.cos(w * u) * torch.cos(w * v) - 0.5),
    }
    out = torch.empty_like(u)
    for i, name in enumerate(TEXTURES):
        out = torch.where(texture_id == i, patterns[name], out)
    return out


def _object_tensors(specs: list[ClipSpec], device) -> dict[str, torch.Tensor]:
    """Per (clip, object slot, frame) parameters; slot 0 is drawn first, the main object last."""
    B, T = len(specs), specs[0].frames
    x = np.zeros((B, MAX_OBJECTS, T), np.float32)
    y, angle, radius = x.copy(), x.copy(), x.copy()
    present, shape, texture, period = (np.zeros((B, MAX_OBJECTS), np.float32) for _ in range(4))
    rgb = np.zeros((B, MAX_OBJECTS, 3), np.float32)
    for b, s in enumerate(specs):
        tracks = list(s.secondary) + [s.main]
        for j, o in enumerate(tracks):
            slot = MAX_OBJECTS - len(tracks) + j
            x[b, slot], y[b, slot], angle[b, slot], radius[b, slot] = o.x, o.y, o.angle, o.radius
            present[b, slot], shape[b, slot] = 1, SHAPES.index(o.shape)
            texture[b, slot], period[b, slot] = TEXTURES.index(o.texture), o.texture_period
            rgb[b, slot] = COLOURS[o.colour]
        radius[b, ~present[b].astype(bool)] = 1.0
    as_t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return dict(x=as_t(x), y=as_t(y), angle=as_t(angle), radius=as_t(radius), present=as_t(present),
                shape=as_t(shape), texture=as_t(texture), period=as_t(period), rgb=as_t(rgb))


def _background(specs: list[ClipSpec], px: torch.Tensor, py: torch.Tensor, device) -> torch.Tensor:
    """(B, T, H, W, 3) low-saturation moving pattern."""
    B = len(specs)
    kind = torch.tensor([BACKGROUNDS.index(s.background) for s in specs], device=device).view(B, 1, 1, 1)
    offset = torch.from_numpy(np.stack([s.background_offset for s in specs])).to(device)  # (B, T, 2)
    X = px + offset[..., 0, None, None]  # (B, T, H, W) pattern coordinates
    Y = py + offset[..., 1, None, None]
    theta = torch.tensor([s.background_angle for s in specs], device=device).view(B, 1, 1, 1)
    period = torch.tensor([s.background_period for s in specs], device=device).view(B, 1, 1, 1)
    along = X * torch.cos(theta) + Y * torch.sin(theta)
    across = -X * torch.sin(theta) + Y * torch.cos(theta)
    w = 2 * math.pi / period
    waves = torch.from_numpy(np.stack([s.cloud_waves for s in specs])).to(device)  # (B, 3, 3)
    clouds = sum(torch.sin((X * torch.cos(waves[:, i, 0]).view(B, 1, 1, 1) + Y * torch.sin(waves[:, i, 0]).view(
        B, 1, 1, 1)) * (2 * math.pi / waves[:, i, 1]).view(B, 1, 1, 1) + waves[:, i, 2].view(B, 1, 1, 1))
                 for i in range(3)) / 3
    patterns = [0.5 + 0.5 * torch.sin(w * along),
                torch.clamp(0.5 + 3 * torch.sin(w * along), 0, 1),
                torch.clamp(0.5 + 3 * torch.sin(w * along) * torch.sin(w * across), 0, 1),
                torch.clamp(0.5 + 1.2 * clouds, 0, 1)]
    p = torch.zeros_like(X)
    for i, pat in enumerate(patterns):
        p = torch.where(kind == i, pat, p)
    light = torch.tensor([s.background_light for s in specs], device=device)  # (B, 2)
    value = light[:, 0].view(B, 1, 1, 1) + (light[:, 1] - light[:, 0]).view(B, 1, 1, 1) * p
    hue = torch.tensor([COLOURS[s.background_colour] for s in specs], device=device)  # (B, 3)
    tint = 0.78 * hue.mean(1, keepdim=True) + 0.22 * hue  # low saturation, same hue
    tint = tint / tint.max(1, keepdim=True).values
    return value[..., None] * tint.view(B, 1, 1, 1, 3)


@torch.no_grad()
def render(specs: list[ClipSpec], device: str | torch.device = "cpu") -> torch.Tensor:
    """Render clips to (B, T, H, W, 3) float32 in [0, 1]; all specs must share one size."""
    if not specs:
        raise ValueError("render got no specs; expected at least one ClipSpec")
    sizes = {(s.frames, s.height, s.width) for s in specs}
    if len(sizes) != 1:
        raise ValueError(f"specs have sizes {sorted(sizes)}; expected one (frames, height, width) for the batch")
    T, H, W = sizes.pop()
    py, px = torch.meshgrid(torch.arange(H, device=device, dtype=torch.float32) + 0.5,
                            torch.arange(W, device=device, dtype=torch.float32) + 0.5, indexing="ij")
    frames = _background(specs, px, py, device)  # (B, T, H, W, 3)
    o = _object_tensors(specs, device)
    main = MAX_OBJECTS - 1
    # Passes: (slot, distance behind the object in radii, opacity). The trail's copies are drawn only when
    # some clip of the batch has one (a clip without gets them at opacity 0, which leaves its pixels as they are).
    trail_passes = [(main, d, a) for d, a in TRAIL] if any(s.trail for s in specs) else []
    if trail_passes:
        # the subject's heading (unit vector of its start-to-end travel) and whether each clip trails
        head = o["x"][:, main, -1] - o["x"][:, main, 0], o["y"][:, main, -1] - o["y"][:, main, 0]
        norm = torch.hypot(*head).clamp_min(1e-6)
        unit = [(h / norm).view(-1, 1, 1, 1) for h in head]
        trail = torch.tensor([float(s.trail) for s in specs], device=device).view(-1, 1, 1, 1)
    for slot, behind, opacity in [(s, 0.0, 1.0) for s in range(main)] + trail_passes + [(main, 0.0, 1.0)]:
        g = lambda k: o[k][:, slot, :, None, None]  # noqa: E731 -- (B, T, 1, 1)
        dx, dy = px - g("x"), py - g("y")
        if behind:  # a trail copy sits this far behind the subject's centre
            dx, dy = dx + behind * g("radius") * unit[0], dy + behind * g("radius") * unit[1]
        c, s = torch.cos(g("angle")), torch.sin(g("angle"))
        u, v = (c * dx + s * dy) / g("radius"), (-s * dx + c * dy) / g("radius")
        sid = o["shape"][:, slot].view(-1, 1, 1, 1)
        alpha = torch.clamp(0.5 - _shape_sdf(sid, u, v) * g("radius"), 0, 1)  # one-pixel anti-aliased edge
        alpha = alpha * o["present"][:, slot].view(-1, 1, 1, 1) * (opacity * trail if behind else opacity)
        tex = _texture(o["texture"][:, slot].view(-1, 1, 1, 1), u, v, o["period"][:, slot].view(-1, 1, 1, 1))
        colour = o["rgb"][:, slot].view(-1, 1, 1, 1, 3) * (0.55 + 0.45 * tex)[..., None]
        frames = frames + alpha[..., None] * (colour - frames)
    return frames.clamp_(0, 1)
