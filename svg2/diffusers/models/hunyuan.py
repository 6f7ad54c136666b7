"""HunyuanVideo (diffusers ``HunyuanVideoPipeline``): the prompt tokens are appended to the video tokens in one
joint self-attention (they stay dense); guidance-distilled, so one transformer call per step."""
from __future__ import annotations

from svg2.diffusers.spec import ModelSpec, SequenceSplit, register_model
from svg2.diffusers.tiny import word_tokenizer


def _grid(model, x):
    p, pt = model.config.patch_size, model.config.patch_size_t
    return x.shape[2] // pt, x.shape[3] // p, x.shape[4] // p


def _latent_grid(tconfig: dict, vconfig: dict, frames: int, height: int, width: int) -> tuple[int, int, int]:
    ft, fs = vconfig.get("temporal_compression_ratio", 4), vconfig.get("spatial_compression_ratio", 8)
    p, pt = tconfig["patch_size"], tconfig["patch_size_t"]
    return ((frames - 1) // ft + 1) // pt, height // fs // p, width // fs // p


def _dims(c: dict) -> dict:
    heads, head_dim = c["num_attention_heads"], c["attention_head_dim"]
    return dict(layers=c["num_layers"] + c["num_single_layers"], heads=heads, head_dim=head_dim,
                mlp_dim=int(c["mlp_ratio"] * heads * head_dim), text_tokens=256, joint=True, image_tokens=0,
                patch=(c["patch_size_t"], c["patch_size"], c["patch_size"]))


def _tiny():
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


register_model(ModelSpec(
    "hunyuan", "HunyuanVideoPipeline",
    ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler"),
    transformer="HunyuanVideoTransformer3DModel",
    self_attention=lambda m: [b.attn for b in m.transformer_blocks] + [b.attn for b in m.single_transformer_blocks],
    grid=_grid, latent_grid=_latent_grid, dims=_dims, text="appended", layout="bshd",
    attention_fn="dispatch_attention_fn", tiny=_tiny, guidance_branches=False,
    # the embedded tokens (B, S, C) and the RoPE tables (S, D) split before the forward builds its key mask (whose
    # video part is then this rank's share); the prompt tokens stay whole on every rank
    sequence=SequenceSplit(outputs=(("x_embedder", 1), ("rope", 0))),
    tiny_call=dict(height=32, width=32, num_frames=9, guidance_scale=4.5, max_sequence_length=16,
                   prompt_template={"template": "{}", "crop_start": 0})))
