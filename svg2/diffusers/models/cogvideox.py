"""CogVideoX (diffusers ``CogVideoXPipeline``): the prompt tokens are prepended to the video tokens in one joint
self-attention (they stay dense); both CFG branches run as one batched transformer call."""
from __future__ import annotations

from svg2.diffusers.spec import ModelSpec, SequenceSplit, register_model
from svg2.diffusers.tiny import T5_SPECIALS, t5_encoder, word_tokenizer


def _grid(model, x):  # CogVideoX latents are (B, F, C, H, W)
    p, pt = model.config.patch_size, model.config.patch_size_t or 1
    return x.shape[1] // pt, x.shape[3] // p, x.shape[4] // p


def _latent_grid(tconfig: dict, vconfig: dict, frames: int, height: int, width: int) -> tuple[int, int, int]:
    ft = vconfig.get("temporal_compression_ratio", 4)
    fs = 2 ** (len(vconfig.get("block_out_channels", (0,) * 4)) - 1)
    p, pt = tconfig["patch_size"], tconfig.get("patch_size_t") or 1
    latent = (frames - 1) // ft + 1
    latent += (-latent) % pt  # the pipeline pads latent frames to a multiple of patch_size_t
    return latent // pt, height // fs // p, width // fs // p


def _dims(c: dict) -> dict:
    heads, head_dim = c["num_attention_heads"], c["attention_head_dim"]
    return dict(layers=c["num_layers"], heads=heads, head_dim=head_dim, mlp_dim=4 * heads * head_dim,
                text_tokens=c["max_text_seq_length"], joint=True, image_tokens=0,
                patch=(c.get("patch_size_t") or 1, c["patch_size"], c["patch_size"]))


def _tiny():
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    tokenizer = word_tokenizer(T5_SPECIALS, append="</s>", model_max_length=226)
    return dict(
        tokenizer=tokenizer,
        text_encoder=t5_encoder("T5EncoderModel", len(tokenizer)),
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


register_model(ModelSpec(
    "cogvideox", "CogVideoXPipeline", ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"),
    transformer="CogVideoXTransformer3DModel", self_attention=lambda m: [b.attn1 for b in m.transformer_blocks],
    grid=_grid, latent_grid=_latent_grid, dims=_dims, text="prepended", layout="bhsd", attention_fn="F",
    # the video tokens split as they enter the first block (the prompt tokens stay whole on every rank); the RoPE
    # tables (S, D), which the pipeline computes and every block reads, as the transformer is called
    sequence=SequenceSplit(inputs=(("transformer_blocks.0", "hidden_states", 1), ("", "image_rotary_emb", 0))),
    tiny=_tiny, tiny_call=dict(height=64, width=64, num_frames=9, guidance_scale=6.0, max_sequence_length=16)))
