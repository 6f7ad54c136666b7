"""Joint video + prompt self-attention (HunyuanVideo appends the prompt, CogVideoX prepends it)."""
import pytest
import torch
import torch.nn.functional as F

from svg2.methods import build_method

B, H, SV, ST, D = 2, 2, 48, 8, 16
GRID = (3, 4, 4)


def inputs(seed, prepend):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, SV + ST, D, generator=g) for _ in range(3))
    video = slice(ST, ST + SV) if prepend else slice(0, SV)
    text = torch.arange(SV + ST)[:ST] if prepend else torch.arange(SV + ST)[SV:]
    key_mask = torch.ones(B, SV + ST, dtype=torch.bool)
    key_mask[0, text[5:]] = False   # 3 padding tokens in row 0, 1 in row 1
    key_mask[1, text[7:]] = False
    return q, k, v, video, text, key_mask


def stock(q, k, v, key_mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])


def run(method, q, k, v, video, key_mask):
    return method(q, k, v, video=video, key_mask=key_mask, grid=GRID)


@pytest.mark.parametrize("prepend", [False, True], ids=["appended", "prepended"])
@pytest.mark.parametrize("name,config", [("dense", {}), ("svg2", dict(num_q_clusters=5, num_k_clusters=7, top_p=1.0))])
def test_full_density_matches_masked_sdpa(prepend, name, config):
    q, k, v, video, _, key_mask = inputs(0, prepend)
    out = run(build_method(name, **config), q, k, v, video, key_mask)
    torch.testing.assert_close(out, stock(q, k, v, key_mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prepend", [False, True], ids=["appended", "prepended"])
def test_sparse_video_dense_prompt_padding_ignored(prepend):
    q, k, v, video, text, key_mask = inputs(1, prepend)
    method = build_method("svg2", num_q_clusters=5, num_k_clusters=7, top_p=0.3, min_kc_ratio=0.0)
    out = run(method, q, k, v, video, key_mask)
    ref = stock(q, k, v, key_mask)
    # Prompt (and padding) queries attend every valid token, exactly as the stock mask does.
    torch.testing.assert_close(out[:, :, text], ref[:, :, text], atol=1e-5, rtol=1e-5)
    assert (out[:, :, video] - ref[:, :, video]).abs().max() > 1e-3  # video queries really are sparse
    density = method.stats[-1].as_row()["density"]
    assert 0 < density < 1
    # Nobody attends padding: changing the padding keys and values changes nothing.
    k2, v2 = k.clone(), v.clone()
    pad = ~key_mask[:, None, :, None].expand_as(k)
    k2[pad], v2[pad] = 100.0, -100.0
    method.reset()
    torch.testing.assert_close(run(method, q, k2, v2, video, key_mask), out, atol=1e-5, rtol=1e-5)


def test_video_queries_attend_every_valid_prompt_token():
    """A prompt key that all video queries score highly must dominate their outputs (it is never dropped)."""
    q, k, v, video, text, key_mask = inputs(2, False)
    u = torch.zeros(D)
    u[0] = 1.0
    q[:, :, video] += 4 * u
    k[:, :, text[0]] = 40 * u  # one prompt key that every video query scores far above the rest
    v[:, :, text[0]] = 7.0
    method = build_method("svg2", num_q_clusters=5, num_k_clusters=7, top_p=0.1, min_kc_ratio=0.0)
    out = run(method, q, k, v, video, key_mask)
    torch.testing.assert_close(out[:, :, video], torch.full_like(out[:, :, video], 7.0), atol=0.05, rtol=0)


def test_bad_arguments_are_named():
    q, k, v, video, _, key_mask = inputs(0, False)
    with pytest.raises(ValueError, match="key_mask has shape"):
        run(build_method("dense"), q, k, v, video, key_mask[:, :10])
    with pytest.raises(ValueError, match="do not fit"):
        run(build_method("dense"), q, k, v, slice(0, 100), key_mask)
