"""What the harness and the integration need to know about a diffusers video model, as one ``ModelSpec`` per
pipeline kind; each module of ``svg2/diffusers/models/`` registers its specs (``register_model``).

A spec names the pipeline and its components, the self-attention modules in layer order, how to read the latent
grid (frames, h, w) off the transformer input and how to predict it from the configs before any weights load, the
transformer dimensions the FLOPs account needs, where conditioning tokens sit in the joint sequence, which
attention function the stock processor calls (the one call the sparse processor reroutes), where sequence
parallelism splits and gathers the video tokens, and how to build a tiny random pipeline of the kind for tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class SequenceSplit:
    """Where Ulysses sequence parallelism (``apply(..., parallel="ulysses")``) hands each rank its share of the video
    tokens and where it joins them again. Every tensor named here holds all video tokens, in latent order, along
    ``dim``; between the splits and the gather every layer but self-attention works token by token."""

    inputs: tuple[tuple[str, str, int], ...] = ()  # (submodule, forward argument, dim): split as the module is called
    outputs: tuple[tuple[str, int], ...] = ()      # (submodule, dim): what the module returns (tensor or tuple) split
    gather: tuple[str, int] = ("proj_out", 1)      # (submodule, dim): its output gathered from every rank


@dataclass(frozen=True)
class ModelSpec:
    kind: str                              # pipeline kind: wan_t2v, wan_i2v, hunyuan, cogvideox, ...
    pipeline: str                          # diffusers pipeline class
    components: tuple[str, ...]            # model_index entries a local directory must hold
    transformer: str                       # diffusers transformer class
    self_attention: Callable               # transformer -> list of self-attention modules in layer order
    grid: Callable                         # (transformer, hidden_states) -> latent token grid (t, h, w)
    latent_grid: Callable                  # (transformer config, vae config, frames, height, width) -> (t, h, w)
    dims: Callable                         # transformer config -> dict(layers, heads, head_dim, mlp_dim, text_tokens,
    #                                        joint, image_tokens, patch): the FLOPs account's per-layer shape
    text: str | None                       # conditioning tokens in the self-attention: None, "appended", "prepended"
    layout: str                            # q/k/v layout of the attention call: "bshd" or "bhsd"
    attention_fn: str                      # module-level name the stock processor calls attention through
    tiny: Callable                         # () -> components of a tiny random pipeline of this kind
    tiny_call: dict = field(default_factory=dict)  # call arguments that generate a few frames of it quickly
    guidance_branches: bool = True         # CFG runs two transformer calls per step when guidance > 1
    needs_image: bool = False              # the pipeline takes a conditioning image
    sequence: SequenceSplit | None = None  # how Ulysses splits the video tokens over ranks (None: it cannot)

    def cfg_branches(self, guidance_scale: float) -> int:
        return 2 if self.guidance_branches and guidance_scale > 1 else 1


SPECS: dict[str, ModelSpec] = {}


def register_model(*specs: ModelSpec) -> None:
    for spec in specs:
        if spec.kind in SPECS and SPECS[spec.kind] is not spec:
            raise ValueError(f"model kind {spec.kind!r} is registered twice")
        SPECS[spec.kind] = spec


def model_spec(kind: str) -> ModelSpec:
    """The spec of a pipeline kind; an unknown kind is an error naming the known ones."""
    if kind not in SPECS:
        raise ValueError(f"model kind={kind!r}; expected one of {sorted(SPECS)}")
    return SPECS[kind]


def transformer_spec(transformer) -> ModelSpec:
    """The spec of a loaded transformer, or of a transformer class name (kinds that share a transformer class
    share its attention layout and dimensions)."""
    name = transformer if isinstance(transformer, str) else type(transformer).__name__
    for spec in SPECS.values():
        if spec.transformer == name:
            return spec
    raise ValueError(f"transformer {name} is not supported; expected one of "
                     f"{sorted({s.transformer for s in SPECS.values()})}")
