"""What Ulysses sequence parallelism relies on, in one process: a method run on a slice of the heads (``heads=``)
gives exactly those heads of the whole call, for every method; and the token split every rank agrees on."""
import json

import pytest
import torch

from svg2.methods import METHODS, build_method
from svg2.parallel import Ulysses, split_sizes
from tests.svg2.baseline_checks import joint_inputs

GRID = (4, 8, 8)
# configs that are sparse on (2, 4, 256, 16) inputs (defaults elsewhere)
SPARSE = {"svg2": dict(num_q_clusters=8, num_k_clusters=16, kmeans_iters_first=3, kmeans_iters_step=1, top_p=0.5),
          "positional": dict(block_size=32, top_p=0.5), "sta": dict(tile=(1, 4, 4), window=(1, 1, 1)),
          "svg1": dict(round_to=16, block_size=16, sparsity=0.3)}


def inputs(seed=0, b=2, h=4, s=256, d=16):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, s, d, generator=g) for _ in range(3)]


def by_head_slices(name, q, k, v, world, calls=2, **call):
    """Each rank's method on its heads (heads=), two calls (cold, then warm-started), outputs joined over heads."""
    hp = q.shape[1] // world
    outs = []
    for r in range(world):
        m = build_method(name, **SPARSE.get(name, {}))
        part = [t[:, r * hp:(r + 1) * hp] for t in (q, k, v)]
        outs.append([m(*part, heads=(r * hp, q.shape[1]), **call) for _ in range(calls)])
    return [torch.cat([o[i] for o in outs], dim=1) for i in range(calls)]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_slice_of_heads_gets_those_heads_of_the_whole_call(name):
    q, k, v = inputs()
    whole = build_method(name, **SPARSE.get(name, {}))
    want = [whole(q, k, v, grid=GRID) for _ in range(2)]
    for world in (2, 4):
        got = by_head_slices(name, q, k, v, world, grid=GRID)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)


def test_sta_per_head_windows_and_strategy_by_head_slices(tmp_path):
    # a rank holds heads first..first+H of the call: its windows are those heads' of the model's table
    windows = ((1, 1, 1), (3, 3, 3), (1, 3, 1), (3, 1, 3))
    strategy = tmp_path / "mask_strategy.json"
    strategy.write_text(json.dumps({f"0_0_{h}": list(windows[(h + 1) % 4]) for h in range(4)}))
    q, k, v = inputs()
    for cfg in (dict(tile=(1, 4, 4), head_windows=windows), dict(tile=(1, 4, 4), strategy=str(strategy))):
        want = build_method("sta", **cfg)(q, k, v, grid=GRID, step=0)
        for world in (2, 4):
            hp = 4 // world
            got = torch.cat([build_method("sta", **cfg)(*(t[:, r * hp:(r + 1) * hp] for t in (q, k, v)), grid=GRID,
                                                        step=0, heads=(r * hp, 4)) for r in range(world)], dim=1)
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_joint_video_and_prompt_by_head_slices():
    q, k, v, video, _, key_mask = joint_inputs(0, prepend=True, h=4)
    for name in ("svg2", "positional"):
        whole = build_method(name, **SPARSE[name])
        want = whole(q, k, v, grid=(3, 4, 8), video=video, key_mask=key_mask)
        got, = by_head_slices(name, q, k, v, 2, calls=1, grid=(3, 4, 8), video=video, key_mask=key_mask)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_svg2_slices_need_heads_to_start_kmeans_as_the_whole_call():
    q, k, v = inputs()
    want = build_method("svg2", **SPARSE["svg2"])(q, k, v)
    blind = build_method("svg2", **SPARSE["svg2"])(q[:, 2:], k[:, 2:], v[:, 2:])  # heads 2, 3 seeded as 0, 1
    assert (blind - want[:, 2:]).abs().max() > 1e-2
    plus = build_method("svg2", **SPARSE["svg2"], kmeans_init="kmeans++")
    with pytest.raises(ValueError, match="kmeans_init='kmeans\\+\\+' cannot start a part of the batch"):
        plus(q[:, 2:], k[:, 2:], v[:, 2:], heads=(2, 4))
    with pytest.raises(ValueError, match="heads=\\(3, 4\\) with 2 heads in q"):
        build_method("dense")(q[:, 2:], k[:, 2:], v[:, 2:], heads=(3, 4))


def test_tokens_split_as_tensor_split_and_heads_must_divide():
    for tokens, world in ((48, 2), (75, 4), (118800, 8), (5, 5)):
        sizes = split_sizes(tokens, world)
        assert sizes == [t.numel() for t in torch.arange(tokens).tensor_split(world)]
        shares = [Ulysses(r, world).share(tokens) for r in range(world)]
        assert [s.stop - s.start for s in shares] == sizes and shares[-1].stop == tokens
    with pytest.raises(ValueError, match="3 tokens do not split over 4 ranks"):
        split_sizes(3, 4)
    with pytest.raises(ValueError, match="24 attention heads do not split over 5 ranks.*\\[1, 2, 3, 4, 6, 8, 12, 24\\]"):
        Ulysses(0, 5).check_heads(24)
