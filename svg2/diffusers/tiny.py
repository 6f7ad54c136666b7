"""Tiny random pipelines of every supported model, written in diffusers format.

Everything is built locally (nothing comes from a model hub): a word-level ``tokenizers`` tokenizer
wrapped as a transformers fast tokenizer, random text encoders of a few thousand parameters, tiny VAEs
and transformers. They exercise the same loading and generation code as real checkpoints. Head dims are
16, so on a GPU the self-attention runs through the Triton kernels (power-of-two head dims >= 16).
"""
from __future__ import annotations

import os

import torch

from svg2.diffusers.models import PIPELINES

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


def _t5_encoder(cls_name: str, vocab: int, d_model: int = 32):
    import transformers

    config = getattr(transformers, cls_name.replace("EncoderModel", "Config"))(
        vocab_size=vocab, d_model=d_model, d_kv=8, d_ff=32, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return getattr(transformers, cls_name)(config)


def _wan(image: bool):
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    tokenizer = word_tokenizer(T5_SPECIALS, append="</s>")
    parts = dict(
        tokenizer=tokenizer,
        text_encoder=_t5_encoder("UMT5EncoderModel", len(tokenizer)),
        vae=AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                             temperal_downsample=[False, True, True]),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16,
            in_channels=36 if image else 16, out_channels=16, text_dim=32, freq_dim=32, ffn_dim=32,
            num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
            image_dim=16 if image else None, added_kv_proj_dim=32 if image else None),
    )
    if image:
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

        parts["image_encoder"] = CLIPVisionModel(CLIPVisionConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            patch_size=16, projection_dim=16))
        parts["image_processor"] = CLIPImageProcessor(crop_size=32, size=32)
    return parts


def _hunyuan():
    from diffusers import AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoTransformer3DModel
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    tokenizer = word_tokenizer({"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}, prepend="<s>")
    tokenizer_2 = word_tokenizer({"bos": "<|startoftext|>", "pad": "<pad>", "eos": "<|endoftext|>", "unk": "<unk>"},
                                 prepend="<|startoftext|>", append="<|endoftext|>", model_max_length=77)
    blocks = ("HunyuanVideoDownBlock3D",) * 4
    return dict(
        tokenizer=tokenizer,
        text_encoder=LlamaModel(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, bos_token_id=0, pad_token_id=1, eos_token_id=2)),
        tokenizer_2=tokenizer_2,
        text_encoder_2=CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer_2), hidden_size=8, intermediate_size=16, num_hidden_layers=2,
            num_attention_heads=2, bos_token_id=0, pad_token_id=1, eos_token_id=2, projection_dim=8)),
        vae=AutoencoderKLHunyuanVideo(
            in_channels=3, out_channels=3, latent_channels=4, down_block_types=blocks,
            up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
            act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
            temporal_compression_ratio=4, mid_block_add_attention=True),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=HunyuanVideoTransformer3DModel(
            in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1,
            num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
            text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(4, 6, 6)),
    )


def _cogvideox():
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    tokenizer = word_tokenizer(T5_SPECIALS, append="</s>", model_max_length=226)
    return dict(
        tokenizer=tokenizer,
        text_encoder=_t5_encoder("T5EncoderModel", len(tokenizer)),
        vae=AutoencoderKLCogVideoX(
            in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
            layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4),
        scheduler=CogVideoXDDIMScheduler(),
        transformer=CogVideoXTransformer3DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=2,
            text_embed_dim=32, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
            temporal_compression_ratio=4, max_text_seq_length=16),
    )


_BUILDERS = {"wan_t2v": lambda: _wan(False), "wan_i2v": lambda: _wan(True), "hunyuan": _hunyuan,
             "cogvideox": _cogvideox}

# Call arguments that generate a few frames quickly on a CPU with each tiny pipeline.
TINY_CALL = {
    "wan_t2v": dict(height=64, width=64, num_frames=9, guidance_scale=5.0),
    "wan_i2v": dict(height=64, width=64, num_frames=9, guidance_scale=5.0),
    "hunyuan": dict(height=32, width=32, num_frames=9, guidance_scale=4.5, max_sequence_length=16,
                    prompt_template={"template": "{}", "crop_start": 0}),
    "cogvideox": dict(height=64, width=64, num_frames=9, guidance_scale=6.0, max_sequence_length=16),
}


def build_tiny_pipeline(kind: str, path, seed: int = 0):
    """Write a tiny random ``kind`` pipeline in diffusers format to ``path``; returns the path."""
    import diffusers

    if kind not in _BUILDERS:
        raise ValueError(f"kind={kind!r}; expected one of {sorted(_BUILDERS)}")
    torch.manual_seed(seed)
    parts = _BUILDERS[kind]()
    pipe = getattr(diffusers, PIPELINES[kind][0])(**parts)
    pipe.save_pretrained(os.fspath(path))
    return path
