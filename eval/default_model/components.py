"""The parts of the embedded default model, in the standard WanPipeline layout.

- tokenizer: word-level, built here from the procedural vocabulary (no download), with an end token.
- text_encoder: a small T5 encoder with seeded random weights, frozen. Its output is a fixed, distinct code
  for every prompt; the transformer's cross-attention learns to read it.
- vae: an ``AutoencoderKLWan`` whose weights are set by hand so that it is (to ~1e-5) the 2x2 pixel
  patchify / unpatchify that the Wan 2.2 VAE config supports, with no temporal compression: the model
  diffuses in pixel space. How: the latent's 12 channels enter the decoder as ``A + p`` beside one constant
  channel ``K >> A``, so the RMS norms divide by a near-constant and SiLU runs in its linear range; the output
  conv subtracts ``A``; every residual branch and the attention projection are zero. See ``identity_vae``.
- transformer: a small ``WanTransformer3DModel`` (the Wan 2.1 architecture), trained by train.py.
- scheduler: ``UniPCMultistepScheduler`` with flow sigmas, as Wan 2.1 ships.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from eval.default_model.procedural import FRAMES, HEIGHT, WIDTH, sample_spec, vocabulary

PIXEL_PATCH = 2  # VAE patchify: 64x64 pixels -> 32x32 latents; the transformer's (1, 2, 2) patch -> 16x16 tokens
LATENT_CHANNELS = 3 * PIXEL_PATCH ** 2
DEFAULT_STEPS = 16
DEFAULT_GUIDANCE = 3.0  # chosen on seeds SELECT_SEED0.. after training (stage3_shift50/eval.json)
_ID_OFFSET = 20.0  # A: SiLU(A + p) = A + p to ~1e-7 for |p| <= 1.5
_ID_CONSTANT = 1.0e6  # K: makes the RMS norm's divisor constant to ~1e-8
SHIPPED_MODEL = Path(__file__).parent / "model"  # the trained weights (stage 3 of MODEL_CARD.md)


@dataclass(frozen=True)
class DiTConfig:
    """The embedded model's transformer and text encoder sizes, the clip size it generates, and the procedural
    clips it is trained on; saved as ``default_model.json`` beside ``model_index.json``."""

    frames: int = FRAMES
    height: int = HEIGHT
    width: int = WIDTH
    num_layers: int = 5
    num_heads: int = 2
    head_dim: int = 64  # 64 or 128: what the sparse kernels support
    ffn_dim: int = 512
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_ffn_dim: int = 256
    text_tokens: int = 32  # max_sequence_length: prompts are <= 28 words + </s>; training pads the same way
    flow_shift: float = 3.0  # the scheduler's shift, and the shift of the training noise levels
    seed: int = 0
    scene: str = "full"  # procedural.SCENES: the clips it is trained and evaluated on
    trail: bool = False  # the subject leaves a fading trail along its heading (procedural.py; an experiment)

    def spec(self, seed: int):
        """The procedural clip (and prompt) of ``seed`` at this model's clip size, scene and trail."""
        return sample_spec(seed, self.frames, self.height, self.width, self.scene, self.trail)

    def specs(self, seed0: int, n: int) -> list:
        """The clips of seeds ``seed0 .. seed0 + n - 1``."""
        return [self.spec(seed0 + i) for i in range(n)]

    @property
    def tokens(self) -> int:
        return self.frames * (self.height // PIXEL_PATCH // 2) * (self.width // PIXEL_PATCH // 2)


TINY = DiTConfig(frames=4, height=32, width=32, num_layers=1, ffn_dim=64, text_dim=32, text_layers=1,
                 text_ffn_dim=64, text_tokens=16)


def build_tokenizer(max_length: int = 512):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=max_length)


def build_text_encoder(cfg: DiTConfig, vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=vocab_size, d_model=cfg.text_dim, d_kv=cfg.text_dim // cfg.text_heads,
                      d_ff=cfg.text_ffn_dim, num_layers=cfg.text_layers, num_heads=cfg.text_heads,
                      relative_attention_num_buckets=16, dropout_rate=0.0, pad_token_id=0, eos_token_id=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = T5EncoderModel(config)
    return model.eval().requires_grad_(False)


def build_transformer(cfg: DiTConfig):
    from diffusers import WanTransformer3DModel

    if cfg.head_dim not in (64, 128):
        raise ValueError(f"head_dim={cfg.head_dim}; expected 64 or 128 (the sparse kernels' head dims)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
            in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, text_dim=cfg.text_dim, freq_dim=256,
            ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)


def build_scheduler(cfg: DiTConfig):
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
                                   flow_shift=cfg.flow_shift)


@torch.no_grad()
def _set_identity_path(conv_in, norm_out, conv_out, n_out_mean: int, logvar_channels: int = 0):
    """conv_in: p -> [A + p, K]; norm_out and SiLU ~ identity on that; conv_out: first channels - A."""
    z = LATENT_CHANNELS
    t, c = conv_in.weight.shape[2] - 1, conv_in.weight.shape[3] // 2  # causal: the last time tap is "now"
    conv_in.weight[:z, :, t, c, c] = torch.eye(z)
    conv_in.bias[:z] = _ID_OFFSET
    conv_in.bias[z] = _ID_CONSTANT
    norm = (z * _ID_OFFSET ** 2 + _ID_CONSTANT ** 2) ** 0.5
    norm_out.gamma.fill_(norm / (z + 1) ** 0.5)
    conv_out.weight[:n_out_mean, :z, t, c, c] = torch.eye(z)
    conv_out.bias[:n_out_mean] = -_ID_OFFSET
    if logvar_channels:
        conv_out.bias[n_out_mean:n_out_mean + logvar_channels] = -30.0  # posterior std e^-15: sampling = mean


def identity_vae(latents_mean: list[float], latents_std: list[float]):
    """AutoencoderKLWan that patchifies pixels 2x2 (encode) and un-patchifies them (decode), nothing else."""
    from diffusers import AutoencoderKLWan

    z = LATENT_CHANNELS
    if len(latents_mean) != z or len(latents_std) != z:
        raise ValueError(f"latents_mean/std have {len(latents_mean)}/{len(latents_std)} entries; expected {z}")
    vae = AutoencoderKLWan(base_dim=z + 1, z_dim=z, dim_mult=[1], num_res_blocks=0, attn_scales=[],
                           temperal_downsample=[], in_channels=z, out_channels=z, patch_size=PIXEL_PATCH,
                           scale_factor_temporal=1, scale_factor_spatial=PIXEL_PATCH,
                           latents_mean=list(latents_mean), latents_std=list(latents_std))
    with torch.no_grad():
        for p in vae.parameters():
            p.zero_()
        for conv in (vae.quant_conv, vae.post_quant_conv):
            n = conv.weight.shape[0]
            conv.weight[:, :, 0, 0, 0] = torch.eye(n)
        _set_identity_path(vae.encoder.conv_in, vae.encoder.norm_out, vae.encoder.conv_out, z, logvar_channels=z)
        _set_identity_path(vae.decoder.conv_in, vae.decoder.norm_out, vae.decoder.conv_out, z)
    return vae.eval().requires_grad_(False)


def pixels_to_latents(frames: torch.Tensor, latents_mean, latents_std) -> torch.Tensor:
    """(B, T, H, W, 3) in [0, 1] -> normalised latents (B, 12, T, H/2, W/2), exactly what the VAE encodes."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import patchify

    x = frames.permute(0, 4, 1, 2, 3) * 2 - 1  # (B, 3, T, H, W) in [-1, 1]
    lat = patchify(x, PIXEL_PATCH)
    mean = torch.as_tensor(latents_mean, device=lat.device, dtype=lat.dtype).view(1, -1, 1, 1, 1)
    std = torch.as_tensor(latents_std, device=lat.device, dtype=lat.dtype).view(1, -1, 1, 1, 1)
    return (lat - mean) / std


def latent_stats(frames: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of un-normalised latents of a batch of clips."""
    lat = pixels_to_latents(frames, [0.0] * LATENT_CHANNELS, [1.0] * LATENT_CHANNELS)
    return lat.mean((0, 2, 3, 4)).tolist(), lat.std((0, 2, 3, 4)).tolist()


def build_pipeline(cfg: DiTConfig, transformer, latents_mean, latents_std):
    from diffusers import WanPipeline

    tokenizer = build_tokenizer(cfg.text_tokens)
    return WanPipeline(tokenizer=tokenizer, text_encoder=build_text_encoder(cfg, len(tokenizer)),
                       transformer=transformer, vae=identity_vae(latents_mean, latents_std),
                       scheduler=build_scheduler(cfg))


CONFIG_FILE = "default_model.json"  # beside model_index.json: the clip size and text length the model was trained on


def save_model(pipe, cfg: DiTConfig, model_dir) -> None:
    """Save in diffusers format, with names that transformers 4 and 5 both load, plus the DiTConfig."""
    model_dir = Path(model_dir)
    pipe.save_pretrained(model_dir, safe_serialization=True)
    (model_dir / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    for name, key in (("model_index.json", "tokenizer"), ("tokenizer/tokenizer_config.json", "tokenizer_class")):
        path = model_dir / name
        meta = json.loads(path.read_text())
        meta[key] = ["transformers", "PreTrainedTokenizerFast"] if key == "tokenizer" else "PreTrainedTokenizerFast"
        path.write_text(json.dumps(meta, indent=2) + "\n")


def load_model_config(model_dir) -> DiTConfig:
    path = Path(model_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; expected a default-model directory written by train.py")
    return DiTConfig(**json.loads(path.read_text()))


def encode_prompts(pipe, prompts: list[str], text_tokens: int) -> torch.Tensor:
    """Prompt embeddings (B, text_tokens, text_dim) padded as the pipeline pads them when it generates."""
    return pipe.encode_prompt(prompts, do_classifier_free_guidance=False, max_sequence_length=text_tokens,
                              device=pipe.transformer.device)[0]


def generation_kwargs(cfg: DiTConfig, steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE) -> dict:
    """Keyword arguments for ``pipe(prompt, **kwargs)`` that produce a default clip of this model.

    WanPipeline rounds ``num_frames`` up to ``k * scale_factor_temporal + 1``; with no temporal compression
    (factor 1) that adds one frame to any request, so ``frames - 1`` is asked for.
    """
    return dict(height=cfg.height, width=cfg.width, num_frames=cfg.frames - 1, num_inference_steps=steps,
                guidance_scale=guidance, max_sequence_length=cfg.text_tokens)
