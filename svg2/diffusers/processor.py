"""Install an svg2 attention method on the self-attention of a diffusers video transformer.

The installed processor is a thin wrapper: it runs the model's own processor (projections, QK-norm,
RoPE, output projection all stay the model's code) and reroutes only the one attention call that
processor makes to the method. The reroute is scoped to that call: the attention function named in
the model spec is swapped in the processor's module for the duration of the call, and a processor
that no longer makes exactly that call raises instead of silently running dense.

Layer indices are fixed at install time. The denoising step and the generation come from the pipeline:
the scheduler's ``set_timesteps`` starts a generation (``method.reset(num_steps)``) and each
``scheduler.step`` advances the step. Transformer calls between two scheduler steps are the CFG
branches (0 = conditional, 1 = unconditional in the Wan and Hunyuan pipelines; CogVideoX batches both
into one call, whose batch rows keep separate state anyway). A transformer used without a pipeline runs
branch 0 at ``method.state.step``.

With ``parallel="ulysses"`` (under torchrun, or any initialised process group) every rank holds a share of the
video tokens and the attention call exchanges them for a share of the heads (``svg2.diffusers.parallel``).
"""
from __future__ import annotations

import contextvars
import functools
import math
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from svg2.diffusers import parallel as sequence_parallel
from svg2.diffusers.spec import ModelSpec, transformer_spec
from svg2.methods.base import AttentionMethod
from svg2.parallel import Ulysses

_ROUTE: contextvars.ContextVar = contextvars.ContextVar("svg2_attention_route", default=None)
_INSTALLED = "_svg2_sparse"   # attribute holding the install record on a transformer / scheduler


@dataclass
class Session:
    """Per-transformer call context shared by its sparse processors."""

    method: AttentionMethod
    spec: ModelSpec
    grid: tuple[int, int, int] | None = None
    branch: int = 0
    calls_in_step: int = 0
    driven: bool = False      # a pipeline's scheduler drives steps and generations
    parallel: Ulysses | None = None  # sequence parallelism: this rank holds a share of the video tokens

    def begin_generation(self) -> None:
        self.calls_in_step, self.driven = 0, True

    def end_step(self) -> None:
        self.calls_in_step = 0

    def before_forward(self, transformer, args, kwargs) -> None:
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        self.grid = tuple(int(g) for g in self.spec.grid(transformer, x))
        self.branch = self.calls_in_step if self.driven else 0
        self.calls_in_step += 1

    def attend(self, q, k, v, attn_mask, layer: int) -> torch.Tensor:
        """The stock processor's attention call, in its layout, answered by the method."""
        if self.spec.layout == "bshd":
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        b, _, s, _ = q.shape
        if self.grid is None:
            raise RuntimeError("no latent grid recorded; call the transformer (not its blocks) after apply()")
        tokens = math.prod(self.grid)
        num_video, held = tokens, ""
        if self.parallel is not None:
            mine = self.parallel.share(tokens)
            num_video, held = mine.stop - mine.start, f" (rank {self.parallel.rank}'s share of {tokens})"
        call = dict(layer=layer, branch=self.branch, grid=self.grid)
        if self.spec.text is None:
            if attn_mask is not None:
                raise ValueError(f"self-attention got a mask of shape {tuple(attn_mask.shape)}; expected none")
            if s != num_video:
                raise ValueError(f"self-attention has S={s} tokens; the latent grid {self.grid} has {num_video}{held}")
        else:
            if not num_video < s:
                raise ValueError(f"joint attention has S={s} tokens; expected more than the {num_video} video "
                                 f"tokens{held}")
            start = 0 if self.spec.text == "appended" else s - num_video
            call.update(video=slice(start, start + num_video), key_mask=_key_mask(attn_mask, b, s))
        if self.parallel is None:
            out = self.method(q, k, v, **call)
        else:
            out = self.parallel.attention(self.method, q, k, v, tokens=tokens, **call)
        return out.transpose(1, 2) if self.spec.layout == "bshd" else out


def _key_mask(mask, b: int, s: int) -> torch.Tensor | None:
    """A stock key-padding mask ((B, S) or (B, 1, 1, S) bool) as (B, S) bool."""
    if mask is None:
        return None
    if mask.dtype != torch.bool or mask.numel() != b * s or mask.shape[-1] != s:
        raise ValueError(f"attention mask has shape {tuple(mask.shape)} and dtype {mask.dtype}; "
                         f"expected a boolean key-padding mask of (B, S)={(b, s)} elements")
    return mask.reshape(b, s)


@dataclass
class _Route:
    session: Session
    layer: int
    used: bool = False


def _routed(original):
    """The attention function as the stock processor sees it during a sparse call."""

    def attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, *args, **kwargs):
        route = _ROUTE.get()
        if route is None or route.used:  # not ours, or the method's own dense fallback
            return original(query, key, value, attn_mask, dropout_p, is_causal, scale, *args, **kwargs)
        route.used = True
        if dropout_p or is_causal or (scale is not None and scale != query.shape[-1] ** -0.5):
            raise ValueError(f"sparse self-attention got dropout_p={dropout_p}, is_causal={is_causal}, "
                             f"scale={scale}; expected 0, False and the default 1/sqrt(D)")
        return route.session.attend(query, key, value, attn_mask, route.layer)

    return attention


@functools.cache
def _replacement(original):
    """The routed stand-in for an attention function, or for ``torch.nn.functional`` (its SDPA routed)."""
    if isinstance(original, types.ModuleType):
        proxy = types.SimpleNamespace(**vars(original))
        proxy.scaled_dot_product_attention = _routed(original.scaled_dot_product_attention)
        return proxy
    return _routed(original)


@contextmanager
def _rerouted(module, name: str):
    """Swap ``module.name`` for its routed stand-in for the duration of one stock processor call."""
    original = getattr(module, name)
    setattr(module, name, _replacement(original))
    try:
        yield
    finally:
        setattr(module, name, original)


class SparseProcessor:
    """Wraps a stock processor; its one attention call goes to the session's method."""

    def __init__(self, stock, session: Session, layer: int):
        self.stock, self.session, self.layer = stock, session, layer

    def __call__(self, attn, *args, **kwargs):
        route = _Route(self.session, self.layer)
        token = _ROUTE.set(route)
        try:
            with _rerouted(sys.modules[type(self.stock).__module__], self.session.spec.attention_fn):
                out = self.stock(attn, *args, **kwargs)
        finally:
            _ROUTE.reset(token)
        if not route.used:
            raise RuntimeError(f"{type(self.stock).__name__} made no {self.session.spec.attention_fn} call; "
                               "diffusers changed how it computes attention, so the sparse reroute no longer applies")
        return out

    def __getattr__(self, name):  # processor attributes the model reads (e.g. _attention_backend)
        if name == "stock":
            raise AttributeError(name)
        return getattr(self.stock, name)


@functools.cache
def _processor_class(stock_cls: type) -> type:
    """A SparseProcessor whose ``__call__`` shows the stock signature: diffusers' ``Attention.forward``
    drops keyword arguments the processor signature does not name."""

    def __call__(self, attn, *args, **kwargs):
        return SparseProcessor.__call__(self, attn, *args, **kwargs)

    functools.update_wrapper(__call__, stock_cls.__call__)
    return type(f"Sparse{stock_cls.__name__}", (SparseProcessor,), {"__call__": __call__})


@dataclass
class _TransformerRecord:
    session: Session
    modules: list
    originals: list
    hooks: list


@dataclass
class _SchedulerRecord:
    sessions: list = field(default_factory=list)

    def methods(self) -> list:  # two transformers (Wan 2.2) may share one method: step it once
        return list({id(s.method): s.method for s in self.sessions}.values())


def _transformers(obj) -> list:
    if hasattr(obj, "transformer") or hasattr(obj, "transformer_2"):  # a pipeline
        found = [t for t in (getattr(obj, "transformer", None), getattr(obj, "transformer_2", None)) if t is not None]
        if not found:
            raise ValueError(f"{type(obj).__name__} has no transformer to install into")
        return found
    return [obj]


def apply(pipe_or_transformer, method: AttentionMethod, parallel: str | Ulysses | None = None) -> None:
    """Install ``method`` on the self-attention of the pipeline's transformer(s), or of a bare transformer.

    Layers are numbered in model order (continuing across a second transformer); the original processors
    are kept for ``remove``. With a pipeline, each pipeline call resets the method at its start.
    ``parallel="ulysses"``: Ulysses sequence parallelism over the default process group (every rank calls
    ``apply`` with the same method, then the pipeline with the same arguments, and gets the whole output); an
    ``svg2.parallel.Ulysses`` gives another group."""
    if not isinstance(method, AttentionMethod):
        raise TypeError(f"method is a {type(method).__name__}; expected an svg2 AttentionMethod (build_method(...))")
    ulysses = sequence_parallel.resolve(parallel)
    transformers = _transformers(pipe_or_transformer)
    for t in transformers:
        if hasattr(t, _INSTALLED):
            raise RuntimeError(f"{type(t).__name__} already has sparse attention installed; call remove() first")
    specs = [transformer_spec(t) for t in transformers]
    if ulysses is not None:  # every check before anything is installed
        for t, spec in zip(transformers, specs):
            sequence_parallel.check_install(ulysses, spec, t, method)
    sessions, layer = [], 0
    for t, spec in zip(transformers, specs):
        session = Session(method, spec, parallel=ulysses)
        modules = spec.self_attention(t)
        originals = [m.processor for m in modules]
        for m, stock in zip(modules, originals):
            m.set_processor(_processor_class(type(stock))(stock, session, layer))
            layer += 1
        hooks = [t.register_forward_pre_hook(session.before_forward, with_kwargs=True)]  # first: the grid
        if ulysses is not None:
            hooks += sequence_parallel.split_hooks(t, spec.sequence, ulysses, lambda s=session: math.prod(s.grid))
        setattr(t, _INSTALLED, _TransformerRecord(session, modules, originals, hooks))
        sessions.append(session)
    scheduler = getattr(pipe_or_transformer, "scheduler", None)
    if scheduler is not None:
        _hook_scheduler(scheduler, sessions)


def remove(pipe_or_transformer) -> None:
    """Restore the original processors and drop every hook ``apply`` installed."""
    for t in _transformers(pipe_or_transformer):
        record = t.__dict__.pop(_INSTALLED, None)
        if record is None:
            continue
        for m, stock in zip(record.modules, record.originals):
            m.set_processor(stock)
        for hook in record.hooks:
            hook.remove()
    scheduler = getattr(pipe_or_transformer, "scheduler", None)
    if scheduler is not None and _INSTALLED in scheduler.__dict__:
        for name in (_INSTALLED, "set_timesteps", "step"):
            scheduler.__dict__.pop(name, None)


def _hook_scheduler(scheduler, sessions: list) -> None:
    """Instance-level wrappers (signatures preserved: pipelines inspect them)."""
    if _INSTALLED in scheduler.__dict__:
        scheduler.__dict__[_INSTALLED].sessions.extend(sessions)
        return
    record = _SchedulerRecord(list(sessions))
    set_timesteps, step = scheduler.set_timesteps, scheduler.step

    @functools.wraps(set_timesteps)
    def hooked_set_timesteps(*args, **kwargs):
        out = set_timesteps(*args, **kwargs)
        num_steps = getattr(scheduler, "num_inference_steps", None) or len(scheduler.timesteps)
        for method in record.methods():
            method.reset(num_steps=num_steps)
            method.set_step(0)
        for s in record.sessions:
            s.begin_generation()
        return out

    @functools.wraps(step)
    def hooked_step(*args, **kwargs):
        out = step(*args, **kwargs)
        for method in record.methods():
            method.set_step(method.state.step + 1)
        for s in record.sessions:
            s.end_step()
        return out

    scheduler.__dict__.update({_INSTALLED: record, "set_timesteps": hooked_set_timesteps, "step": hooked_step})
