"""Wan 2.1 text-to-video and image-to-video (diffusers ``WanPipeline`` / ``WanImageToVideoPipeline``).

Wan I2V conditions through channel-concatenated latents and cross-attention (attn2): its self-attention holds
video tokens only, so the image conditioning stays dense by construction.
"""
from __future__ import annotations

from svg2.diffusers.spec import ModelSpec, SequenceSplit, register_model
from svg2.diffusers.tiny import T5_SPECIALS, t5_encoder, word_tokenizer


def _grid(model, x):
    t, h, w = model.config.patch_size
    return x.shape[2] // t, x.shape[3] // h, x.shape[4] // w


def _latent_grid(tconfig: dict, vconfig: dict, frames: int, height: int, width: int) -> tuple[int, int, int]:
    # WanPipeline rounds num_frames to 1 + a multiple of the VAE's temporal factor (up by one when that is 1)
    ft, fs = vconfig.get("scale_factor_temporal", 4), vconfig.get("scale_factor_spatial", 8)
    if frames % ft != 1:
        frames = frames // ft * ft + 1
    pt, ph, pw = tconfig["patch_size"]
    return ((frames - 1) // ft + 1) // pt, height // fs // ph, width // fs // pw


def _dims(c: dict) -> dict:
    image = c.get("image_dim") is not None
    return dict(layers=c["num_layers"], heads=c["num_attention_heads"], head_dim=c["attention_head_dim"],
                mlp_dim=c["ffn_dim"], text_tokens=512, joint=False, image_tokens=257 if image else 0,
                patch=tuple(c["patch_size"]))


def _tiny(image: bool):
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    tokenizer = word_tokenizer(T5_SPECIALS, append="</s>")
    parts = dict(
        tokenizer=tokenizer,
        text_encoder=t5_encoder("UMT5EncoderModel", len(tokenizer)),
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


_COMMON = dict(transformer="WanTransformer3DModel", self_attention=lambda m: [b.attn1 for b in m.blocks],
               grid=_grid, latent_grid=_latent_grid, dims=_dims, text=None, layout="bshd",
               attention_fn="dispatch_attention_fn",
               tiny_call=dict(height=64, width=64, num_frames=9, guidance_scale=5.0),
               # the first block's tokens and the RoPE tables (1, S, 1, D) split; the output projection gathers
               sequence=SequenceSplit(inputs=(("blocks.0", "hidden_states", 1),), outputs=(("rope", 1),)))
register_model(
    ModelSpec("wan_t2v", "WanPipeline", ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"),
              tiny=lambda: _tiny(False), **_COMMON),
    ModelSpec("wan_i2v", "WanImageToVideoPipeline",
              ("transformer", "vae", "text_encoder", "tokenizer", "scheduler", "image_encoder", "image_processor"),
              tiny=lambda: _tiny(True), needs_image=True, **_COMMON),
)
