import pytest

from eval.default_model.conditioning import conditioning_check, swap_word
from eval.default_model.detector import parse_prompt
from eval.default_model.evaluate import load_pipeline

PROMPT = "a blue dotted cross moves left while growing over a cyan checkerboard as the camera pans left"


def test_swap_word_changes_only_the_subjects_attribute():
    moved = swap_word(PROMPT, "direction")
    assert parse_prompt(moved) == ("blue", "right") and moved.endswith("camera pans left")
    recoloured = swap_word(PROMPT, "colour")
    assert parse_prompt(recoloured)[1] == "left" and parse_prompt(recoloured)[0] != "blue"
    assert "cyan checkerboard" in recoloured
    with pytest.raises(ValueError, match="attribute='shape'"):
        swap_word(PROMPT, "shape")


def test_conditioning_check_reports_both_attributes_per_sigma(tiny_run):
    _, model_dir = tiny_run
    rows = conditioning_check(load_pipeline(model_dir), clips=2, sigmas=(0.3, 0.99))
    assert [(r["sigma"], r["attribute"]) for r in rows] == [(0.3, "colour"), (0.3, "direction"),
                                                            (0.99, "colour"), (0.99, "direction")]
    assert all(0 <= r["follows_prompt"] <= 1 and 0 <= r["follows_swap"] <= 1 and r["clips"] == 2 for r in rows)


def test_denoising_error_compares_the_prediction_with_the_input_noise(tiny_run):
    from eval.default_model.conditioning import denoising_error

    _, model_dir = tiny_run
    rows = denoising_error(load_pipeline(model_dir), clips=2, sigmas=(0.1, 0.9))
    assert [r["sigma"] for r in rows] == [0.1, 0.9]
    for r in rows:
        # the input's own error is sigma * RMS(noise - x0): about sigma * sqrt(2) for unit-variance latents
        assert 0.5 * r["sigma"] < r["input_rmse"] < 2.5 * r["sigma"]
        assert r["x0_rmse"] > 0 and r["ratio"] == pytest.approx(r["x0_rmse"] / r["input_rmse"])


def test_token_shuffle_round_trips_and_is_measured_per_sigma(tiny_run):
    import torch

    from eval.default_model.conditioning import _tokens, _untokens, position_sensitivity

    z = torch.randn(2, 12, 4, 6, 10)
    tokens = _tokens(z, (1, 2, 2))
    assert tokens.shape == (2, 4 * 3 * 5, 48) and torch.equal(_untokens(tokens, z.shape, (1, 2, 2)), z)
    # token k of frame 0 at row 0, column 1 holds latent pixels (0..1, 2..3) of every channel
    assert torch.equal(tokens[0, 1].reshape(12, 1, 2, 2), z[0, :, 0:1, 0:2, 2:4])
    _, model_dir = tiny_run
    rows = position_sensitivity(load_pipeline(model_dir), clips=2, sigmas=(0.5, 0.99))
    assert [r["sigma"] for r in rows] == [0.5, 0.99] and all(r["relative_change"] > 0 for r in rows)


def test_sampling_from_pure_noise_is_the_pipelines_generation(tiny_run):
    import torch

    from eval.default_model.components import generation_kwargs
    from eval.default_model.conditioning import _held_out, sample_from

    _, model_dir = tiny_run
    pipe = load_pipeline(model_dir)
    x0, prompts = _held_out(pipe, 2, 30_000_000)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    kwargs = generation_kwargs(pipe.dit_config, steps=4, guidance=3.0)
    want = pipe(prompt=prompts, latents=noise.clone(), output_type="latent", **kwargs).frames
    got = sample_from(pipe, x0, prompts, 1.0, noise, steps=4, guidance=3.0)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # from below the last noise level there is nothing to sample; from a middle level the clip shows through
    assert torch.equal(sample_from(pipe, x0, prompts, 0.0, noise, steps=4), x0)
    mid = sample_from(pipe, x0, prompts, 0.5, noise, steps=4, guidance=3.0)
    assert (mid - x0).norm() < (got - x0).norm()


def test_restart_check_scores_every_start(tiny_run):
    from eval.default_model.conditioning import restart_check

    _, model_dir = tiny_run
    rows = restart_check(load_pipeline(model_dir), clips=2, starts=(0.8, 1.0), steps=3)
    assert [r["sigma_start"] for r in rows] == [0.8, 1.0]
    assert rows[1]["steps_skipped"] == 0 and rows[1]["start_level"] == pytest.approx(1.0, abs=1e-4)
    assert 0 < rows[0]["steps_skipped"] < 3 and rows[0]["start_level"] <= 0.8
    assert all(0 <= r[k] <= 1 for r in rows for k in ("colour_acc", "direction_acc"))
    assert all(r["subject_speed"] >= 0 and r["data_speed"] > 0 for r in rows)


def test_restart_command_samples_with_another_shift(tiny_run, tmp_path):
    import json

    from eval.default_model.conditioning import main

    _, model_dir = tiny_run
    out = tmp_path / "restart.json"
    rows = main(["--model", str(model_dir), "--restart", "--starts", "1.0", "--flow-shift", "8", "--clips", "1",
                 "--out", str(out)])
    assert [(r["sigma_start"], r["flow_shift"]) for r in rows] == [(1.0, 8.0)]
    assert json.loads(out.read_text()) == rows


def test_prompt_check_command_takes_its_noise_levels(tiny_run):
    from eval.default_model.conditioning import main

    _, model_dir = tiny_run
    rows = main(["--model", str(model_dir), "--sigmas", "0.99,1.0", "--clips", "1"])
    assert [(r["sigma"], r["attribute"]) for r in rows] == [(0.99, "colour"), (0.99, "direction"),
                                                            (1.0, "colour"), (1.0, "direction")]
