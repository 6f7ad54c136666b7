"""Helpers shared by the diffusers tests: short generations with the tiny pipelines."""
import torch

from svg2.diffusers import model_spec

KINDS = ("wan_t2v", "wan_i2v", "hunyuan", "cogvideox")
PROMPT = "a red circle moving left over a striped background"


def call_args(pipe, kind, steps=2, seed=0, **overrides):
    """Arguments of a short generation (``overrides``: other sizes). Wan I2V's prompt cleaning needs ftfy (not
    installed here), so it gets prompt embeddings from the Wan T2V encoder, which shares its tokenizer and text
    encoder."""
    kw = dict(num_inference_steps=steps, output_type="pt", generator=torch.Generator().manual_seed(seed),
              **{**model_spec(kind).tiny_call, **overrides})
    if kind == "wan_i2v":
        import PIL.Image
        from diffusers import WanPipeline

        kw["image"] = PIL.Image.new("RGB", (64, 64), (200, 40, 40))
        kw["prompt_embeds"], kw["negative_prompt_embeds"] = (
            WanPipeline._get_t5_prompt_embeds(pipe, prompt=p, max_sequence_length=512, device="cpu")
            for p in (PROMPT, ""))
    else:
        kw.update(prompt=PROMPT, negative_prompt="")
    return kw


def generate(pipe, kind, **kwargs):
    with torch.no_grad():
        return pipe(**call_args(pipe, kind, **kwargs)).frames


def build_with_heads(kind, path, heads, seed=0, **transformer):
    """A tiny random ``kind`` pipeline whose transformer has ``heads`` attention heads (and any other config
    changes in ``transformer``), written in diffusers format to ``path``."""
    import diffusers

    spec = model_spec(kind)
    torch.manual_seed(seed)
    parts = spec.tiny()
    stock = parts["transformer"]
    parts["transformer"] = type(stock).from_config({**stock.config, "num_attention_heads": heads, **transformer})
    getattr(diffusers, spec.pipeline)(**parts).save_pretrained(path)
    return path
