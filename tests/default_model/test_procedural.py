import numpy as np
import pytest
import torch

from eval.default_model.detector import CHANCE, detect, detect_motion, parse_prompt, score_clip, summarise
from eval.default_model.procedural import COLOURS, DIRECTIONS, FRAMES, HEIGHT, WIDTH, render, sample_spec, vocabulary


def _clips(seeds):
    specs = [sample_spec(s) for s in seeds]
    frames = torch.cat([render(specs[i:i + 8]) for i in range(0, len(specs), 8)])
    return specs, frames


def test_same_seed_same_clip_and_prompt():
    a, b = sample_spec(123), sample_spec(123)
    assert a.prompt == b.prompt
    fa, fb = render([a]), render([b])
    assert torch.equal(fa, fb)
    assert fa.shape == (1, FRAMES, HEIGHT, WIDTH, 3) and fa.dtype == torch.float32
    assert 0 <= fa.min() and fa.max() <= 1
    assert not torch.equal(fa, render([sample_spec(124)]))


def test_batched_render_matches_single():
    specs = [sample_spec(s) for s in (3, 4, 5)]
    assert torch.allclose(render(specs)[1], render([specs[1]])[0], atol=1e-6)


def test_clips_move_and_vary():
    specs, frames = _clips(range(16))
    assert len({s.prompt for s in specs}) == 16
    motion = (frames[:, 1:] - frames[:, :-1]).abs().mean((1, 2, 3, 4))
    assert (motion > 1e-3).all()  # every clip has moving content
    assert frames.std() > 0.15


def test_prompts_use_only_the_vocabulary_and_name_the_subject():
    words = set(vocabulary())
    for seed in range(200):
        spec = sample_spec(seed)
        assert set(spec.prompt.split()) <= words, spec.prompt
        assert parse_prompt(spec.prompt) == (spec.main.colour, spec.direction)
    seen = {parse_prompt(sample_spec(s).prompt) for s in range(400)}
    assert {c for c, _ in seen} == set(COLOURS) and {d for _, d in seen} == set(DIRECTIONS)


@pytest.mark.slow
def test_detector_scores_procedural_clips_near_perfectly():
    specs, frames = _clips(range(1000, 1048))
    summary = summarise([score_clip(f, s.prompt) for f, s in zip(frames, specs)])
    assert summary["colour_acc"] >= 0.95 and summary["direction_acc"] >= 0.95, summary


def test_detector_scores_noise_near_chance():
    specs = [sample_spec(s) for s in range(2000, 2096)]
    noise = torch.rand(len(specs), FRAMES, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(0))
    summary = summarise([score_clip(f, s.prompt) for f, s in zip(noise, specs)])
    # chance is 1/6 and 1/4; 96 clips put these bounds about four standard deviations out
    assert summary["colour_acc"] <= CHANCE["colour"] + 0.16, summary
    assert summary["direction_acc"] <= CHANCE["direction"] + 0.18, summary


def test_detector_sees_a_reversed_clip_move_the_other_way():
    spec = sample_spec(7)
    frames = render([spec])[0]
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    assert detect(frames) == (spec.main.colour, spec.direction)
    assert detect(frames.flip(0)) == (spec.main.colour, opposite[spec.direction])


def test_detector_measures_the_subjects_speed():
    spec = sample_spec(7)
    frames = render([spec])[0]
    true_speed = float(np.hypot(np.diff(spec.main.x).mean(), np.diff(spec.main.y).mean()))
    got = detect_motion(frames)
    assert (got.colour, got.direction) == (spec.main.colour, spec.direction)
    assert got.speed == pytest.approx(true_speed, rel=0.1)
    still = frames[:1].expand_as(frames)  # the first frame held: the subject does not move
    assert detect_motion(still).speed == pytest.approx(0.0, abs=1e-4)
    summary = summarise([score_clip(frames, spec.prompt), score_clip(still, spec.prompt)])
    assert summary["subject_speed"] == pytest.approx(got.speed / 2, rel=1e-4)


def test_steadiness_tells_a_translating_subject_from_one_that_jumps():
    clips = render([sample_spec(s) for s in range(8)])
    steady = [detect_motion(c).steadiness for c in clips]
    assert min(steady) > 0.99  # procedural subjects move along straight lines
    g = torch.Generator().manual_seed(torch.seed() % 2**31)  # fresh frame orders each run
    jumping = [detect_motion(c[torch.randperm(c.shape[0], generator=g)]).steadiness for c in clips]
    assert sum(jumping) / len(jumping) < 0.5  # the same frames in a random order: the centroid jumps about
    assert detect_motion(clips[0][:1].expand_as(clips[0])).steadiness == 0.0  # a still subject has no line
    assert summarise([score_clip(c, sample_spec(s).prompt) for s, c in enumerate(clips)])["subject_steadiness"] \
        == pytest.approx(sum(steady) / len(steady))


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="seed=-1"):
        sample_spec(-1)
    with pytest.raises(ValueError, match="moves <direction>"):
        parse_prompt("a dog runs")
    with pytest.raises(ValueError, match=r"expected \(T, H, W, 3\)"):
        detect(torch.rand(4, 8, 8))
    with pytest.raises(ValueError, match="one \\(frames, height, width\\)"):
        render([sample_spec(1), sample_spec(2, frames=8)])


def test_simple_scene_keeps_the_subject_and_drops_the_clutter():
    for seed in range(40):
        full, simple = sample_spec(seed), sample_spec(seed, scene="simple")
        assert all(np.array_equal(getattr(simple.main, f), getattr(full.main, f)) for f in ("x", "y", "angle", "radius"))
        assert (simple.main.shape, simple.main.colour, simple.main.texture) == (full.main.shape, full.main.colour,
                                                                                full.main.texture)
        assert (simple.direction, simple.action) == (full.direction, full.action)
        assert simple.secondary == () and simple.pan == "" and simple.background == "gradient"
        assert parse_prompt(simple.prompt) == parse_prompt(full.prompt)
        assert "past" not in simple.prompt and "camera" not in simple.prompt
    with pytest.raises(ValueError, match="scene='busy'"):
        sample_spec(0, scene="busy")


def test_the_trail_lies_behind_the_subject_in_every_frame_and_draws_nothing():
    for seed in range(12):
        with_trail, without = sample_spec(seed, trail=True), sample_spec(seed)
        assert with_trail.prompt == without.prompt and with_trail.trail and not without.trail
        a, b = render([with_trail])[0], render([without])[0]
        changed = (a - b).abs().amax(-1) > 0.02  # (T, H, W): the trail's pixels
        assert changed.any(1).any(1).all(), "every frame shows the trail"
        dx, dy = DIRECTIONS[with_trail.direction]
        ys, xs = torch.meshgrid(torch.arange(a.shape[1]) + 0.5, torch.arange(a.shape[2]) + 0.5, indexing="ij")
        m = with_trail.main
        for t in range(a.shape[0]):
            w = changed[t].float()
            along = ((xs - float(m.x[t])) * dx + (ys - float(m.y[t])) * dy)  # signed distance along the heading
            assert (along * w).sum() / w.sum() < -0.3 * float(m.radius[t]), (seed, t)  # behind, not ahead
