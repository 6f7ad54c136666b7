"""Ulysses sequence parallelism inside a diffusers video transformer (``apply(pipe, method, parallel="ulysses")``).

Every rank runs the whole pipeline with the same inputs. Hooks placed where the model's ``SequenceSplit`` says
hand each rank its share of the video tokens (and of the RoPE tables) and gather the shares back at the output
projection; in between, every layer but self-attention works token by token on the rank's share, and the sparse
processor's attention call goes through ``svg2.parallel.Ulysses.attention`` (all tokens, H/P heads, for the
method). Prompt tokens of joint models stay whole on every rank, as in one process.
"""
from __future__ import annotations

import inspect
from dataclasses import asdict
from typing import Callable

from svg2.diffusers.spec import ModelSpec, SequenceSplit
from svg2.parallel import PARALLEL, Ulysses, split_sizes


def resolve(parallel) -> Ulysses | None:
    """``apply``'s ``parallel`` argument as a Ulysses layout: None, 'ulysses' (the default process group) or a
    ``Ulysses`` over a group of one's own."""
    if parallel is None or isinstance(parallel, Ulysses):
        return parallel
    if parallel in PARALLEL:
        return Ulysses.over()
    raise ValueError(f"parallel={parallel!r}; expected None, one of {list(PARALLEL)} or an svg2.parallel.Ulysses")


def check_install(ulysses: Ulysses, spec: ModelSpec, transformer, method) -> None:
    """What must hold before any hook goes in: the model can be split, its heads divide over the ranks, and every
    rank installs the same method on the same transformer."""
    if spec.sequence is None:
        raise ValueError(f"{spec.transformer} has no sequence split (ModelSpec.sequence); parallel='ulysses' needs one")
    dims = spec.dims(dict(transformer.config))
    ulysses.check_heads(dims["heads"])
    ulysses.same_on_all_ranks("what to install", {
        "method": method.name, **{f"method.{k}": v for k, v in asdict(method.config).items()},
        "transformer": spec.transformer, **{f"transformer.{k}": v for k, v in dims.items()}})


def split_hooks(transformer, split: SequenceSplit, ulysses: Ulysses, tokens: Callable[[], int]) -> list:
    """Install the splits and the gather of ``split`` on ``transformer``; ``tokens()`` is the current call's video
    token count (recorded by a pre-hook installed before these). Returns the hook handles."""
    handles = []
    for path, argument, dim in split.inputs:
        module = transformer.get_submodule(path)
        handles.append(module.register_forward_pre_hook(
            _input_split(module, argument, dim, ulysses, tokens, f"{path or 'the transformer'}({argument}=)"),
            with_kwargs=True))
    for path, dim in split.outputs:
        handles.append(transformer.get_submodule(path).register_forward_hook(
            lambda module, args, out, dim=dim, where=path: _share(out, dim, ulysses, tokens(), f"{where} output")))
    path, dim = split.gather
    handles.append(transformer.get_submodule(path).register_forward_hook(
        lambda module, args, out: ulysses.gather(out, dim, split_sizes(tokens(), ulysses.world_size))))
    return handles


def _input_split(module, argument: str, dim: int, ulysses: Ulysses, tokens, where: str):
    position = list(inspect.signature(module.forward).parameters).index(argument)

    def hook(module, args, kwargs):
        if argument in kwargs:
            kwargs[argument] = _share(kwargs[argument], dim, ulysses, tokens(), where)
        elif position < len(args):
            args = (*args[:position], _share(args[position], dim, ulysses, tokens(), where), *args[position + 1:])
        return args, kwargs

    return hook


def _share(value, dim: int, ulysses: Ulysses, tokens: int, where: str):
    """This rank's share of the video tokens of a tensor (or of each tensor of a tuple) along ``dim``."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return type(value)(_share(v, dim, ulysses, tokens, where) for v in value)
    if value.shape[dim] != tokens:
        raise RuntimeError(f"{where} has shape {tuple(value.shape)}; the sequence split expects the {tokens} video "
                           f"tokens along dim {dim} (diffusers changed the model, or its ModelSpec.sequence is wrong)")
    mine = ulysses.share(tokens)
    return value.narrow(dim, mine.start, mine.stop - mine.start).contiguous()
