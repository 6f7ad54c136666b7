"""The registry of real model shapes: what the FLOPs account, the benchmarks and the CLIs rely on."""
import pytest

from eval.shapes import SHAPES, build_transformer, from_transformer, get_shape, load_config, parse_shapes
from svg2.methods import svg2_preset


def test_shapes_have_the_documented_sizes():
    # (tokens of one self-attention call, heads, head dim, layers, transformer calls per step), DESIGN.md's table
    sizes = {n: (s.attention_tokens, s.heads, s.head_dim, s.layers, s.cfg_branches) for n, s in SHAPES.items()}
    assert sizes == {"wan_t2v_1.3b_480p": (32_760, 12, 128, 30, 2), "wan_t2v_14b_720p": (75_600, 40, 128, 40, 2),
                     "wan_i2v_14b_720p": (75_600, 40, 128, 40, 2), "hunyuan_720p": (118_800 + 256, 24, 128, 60, 1),
                     "cogvideox_5b_480p": (17_550 + 226, 48, 64, 42, 2)}
    assert SHAPES["wan_t2v_14b_720p"].grid == (21, 45, 80) and SHAPES["hunyuan_720p"].grid == (33, 45, 80)
    assert SHAPES["wan_i2v_14b_720p"].image_tokens == 257 and not SHAPES["wan_t2v_14b_720p"].joint


def test_every_committed_configuration_builds_its_transformer():
    for shape in SHAPES.values():
        model = build_transformer(shape, "meta")  # no weights allocated
        blocks = sum(len(getattr(model, name, [])) for name in ("blocks", "transformer_blocks",
                                                                 "single_transformer_blocks"))
        assert blocks == shape.layers, shape.name
        assert load_config(shape.configs, "transformer")["_source"].startswith("https://huggingface.co/")


def test_unknown_names_are_errors_that_list_the_known_ones():
    with pytest.raises(ValueError, match="wan_t2v_14b_720p"):
        get_shape("wan_720p")
    with pytest.raises(ValueError, match="hunyuan_720p"):
        parse_shapes("hunyuan_720p,sd3")
    with pytest.raises(ValueError, match="WanTransformer3DModel"):
        from_transformer("x", {"_class_name": "UNet2DConditionModel"}, (9, 64, 64), 8)
    with pytest.raises(FileNotFoundError, match="transformer"):
        load_config("HunyuanVideo", "unet")


def test_fewer_layers_change_only_the_depth():
    shape = SHAPES["wan_t2v_1.3b_480p"].with_transformer(num_layers=3)
    assert shape.layers == 3 and shape.grid == SHAPES["wan_t2v_1.3b_480p"].grid and shape.heads == 12


def test_svg2_presets_follow_the_resolution():
    assert svg2_preset("wan_t2v_14b_720p").num_q_clusters == 300
    assert svg2_preset(SHAPES["hunyuan_720p"].name).num_q_clusters == 400
    assert svg2_preset("wan_t2v_1.3b_480p", top_p=0.95).top_p == 0.95
    with pytest.raises(ValueError, match="preset='cogvideox_5b_480p'; expected one of"):
        svg2_preset("cogvideox_5b_480p")
