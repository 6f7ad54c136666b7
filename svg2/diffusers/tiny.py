"""Tiny random pipelines of every supported model, written in diffusers format (each model module of
``svg2/diffusers/models/`` says how to build its components from the parts here).

Everything is built locally (nothing comes from a model hub): a word-level ``tokenizers`` tokenizer
wrapped as a transformers fast tokenizer, random text encoders of a few thousand parameters, tiny VAEs
and transformers. They exercise the same loading and generation code as real checkpoints. Head dims are
16, so on a GPU the self-attention runs through the Triton kernels (power-of-two head dims >= 16).
"""
from __future__ import annotations

import os

import torch


# Words of the procedural-video prompts the project uses, plus a few generic ones.
WORDS = ("a an the of on in over with and is are moving rotating spinning bouncing sliding red green blue "
         "yellow white black orange purple circle square triangle star disc ring shape shapes textured "
         "striped checkered background moving left right up down slowly quickly small large video frame "
         "dance monkey cat dog camera").split()


def word_tokenizer(specials: dict[str, str], *, append: str | None = None, prepend: str | None = None,
                   model_max_length: int = 512):
    """A word-level fast tokenizer; ``specials`` maps role (pad/eos/unk/bos) to token, ids in that order."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(specials.values())}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials["unk"]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if append or prepend:
        single = " ".join(([prepend] if prepend else []) + ["$A"] + ([append] if append else []))
        tok.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(t, vocab[t]) for t in (prepend, append) if t])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length,
                                   **{f"{role}_token": t for role, t in specials.items()})


T5_SPECIALS = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"}


def t5_encoder(cls_name: str, vocab: int, d_model: int = 32):
    import transformers

    config = getattr(transformers, cls_name.replace("EncoderModel", "Config"))(
        vocab_size=vocab, d_model=d_model, d_kv=8, d_ff=32, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return getattr(transformers, cls_name)(config)


def build_tiny_pipeline(kind: str, path, seed: int = 0):
    """Write a tiny random ``kind`` pipeline in diffusers format to ``path``; returns the path."""
    import diffusers

    from svg2.diffusers.spec import model_spec

    spec = model_spec(kind)
    torch.manual_seed(seed)
    pipe = getattr(diffusers, spec.pipeline)(**spec.tiny())
    pipe.save_pretrained(os.fspath(path))
    return path
