"""Helpers shared by the diffusers tests: short generations with the tiny pipelines."""
import torch

from svg2.diffusers import model_spec

KINDS = ("wan_t2v", "wan_i2v", "hunyuan", "cogvideox")
PROMPT = "a red circle moving left over a striped background"


def call_args(pipe, kind, steps=2, seed=0):
    """Arguments of a short generation. Wan I2V's prompt cleaning needs ftfy (not installed here), so it
    gets prompt embeddings from the Wan T2V encoder, which shares its tokenizer and text encoder."""
    kw = dict(num_inference_steps=steps, output_type="pt", generator=torch.Generator().manual_seed(seed),
              **model_spec(kind).tiny_call)
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
