import dataclasses
import json

import pytest
import torch

from eval.default_model.components import LATENT_CHANNELS, SHIPPED_MODEL, TINY, DiTConfig, build_text_encoder, \
    build_tokenizer, generation_kwargs, identity_vae, latent_stats, load_model_config, pixels_to_latents
from eval.default_model.procedural import render, sample_spec, vocabulary
from eval.default_model.train import RECORDS, STAGES, TrainConfig, dit_config, lr_at, parse_args, train


def test_identity_vae_round_trips_pixels_and_matches_pixels_to_latents():
    frames = render([sample_spec(s, frames=5, height=32, width=32) for s in range(2)])  # encode needs 4k+1 frames
    mean, std = latent_stats(frames)
    vae = identity_vae(mean, std)
    x = frames.permute(0, 4, 1, 2, 3) * 2 - 1  # (B, 3, T, H, W) in [-1, 1]
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
        raw = posterior.sample(generator=torch.Generator().manual_seed(0))
        normalised = (raw - torch.tensor(mean).view(1, -1, 1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1, 1)
        assert torch.allclose(normalised, pixels_to_latents(frames, mean, std), atol=1e-4)
        assert raw.shape == (2, LATENT_CHANNELS, 5, 16, 16)
        decoded = vae.decode(raw).sample
    assert (decoded - x).abs().max() < 1e-4


def test_tokenizer_knows_every_prompt_word_and_ends_with_eos():
    tok = build_tokenizer()
    ids = tok(sample_spec(3).prompt).input_ids
    assert tok.unk_token_id not in ids and ids[-1] == tok.eos_token_id
    assert len(tok) == len(vocabulary()) + 3
    assert tok("a Purple dog").input_ids.count(tok.unk_token_id) == 2


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    cfg = TrainConfig(warmup_steps=10, max_steps=110)
    lrs = [lr_at(s, cfg, 110) for s in range(110)]
    assert lrs[0] == pytest.approx(cfg.lr / 10) and max(lrs) == pytest.approx(cfg.lr)
    assert lrs[-1] == pytest.approx(0.1 * cfg.lr, rel=0.01)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="preset='huge'"):
        TrainConfig(preset="huge")
    with pytest.raises(ValueError, match="max_steps=0 and max_minutes=0"):
        parse_args(["--max-minutes", "0"])
    with pytest.raises(ValueError, match="train_shift=-1.0"):
        parse_args(["--train-shift", "-1"])


def test_tiny_training_run_saves_a_wan_pipeline_that_generates(tiny_run):
    from diffusers import WanPipeline

    out, model_dir = tiny_run
    rows = (out / "loss.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 5
    assert json.loads((out / "train.json").read_text())["steps"] == 4
    assert (model_dir / "transformer" / "diffusion_pytorch_model.safetensors").exists()
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]

    mcfg = load_model_config(model_dir)
    assert mcfg == TINY
    pipe = WanPipeline.from_pretrained(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    kwargs = generation_kwargs(mcfg, steps=2)
    video = pipe(prompt=sample_spec(0).prompt, output_type="pt", generator=torch.Generator().manual_seed(0),
                 **kwargs).frames
    assert video.shape == (1, TINY.frames, 3, TINY.height, TINY.width)
    again = pipe(prompt=sample_spec(0).prompt, output_type="pt", generator=torch.Generator().manual_seed(0),
                 **kwargs).frames
    assert torch.equal(video, again)


def test_model_overrides_and_flags_parse():
    cfg = parse_args(["--model", "num_layers=3, ffn_dim=128,flow_shift=5", "--train-text"])
    assert cfg.train_text and not parse_args([]).train_text and not parse_args(["--no-train-text"]).train_text
    mcfg = dit_config(cfg)
    assert (mcfg.num_layers, mcfg.ffn_dim, mcfg.flow_shift, mcfg.seed) == (3, 128, 5.0, cfg.seed)
    assert mcfg.head_dim == DiTConfig().head_dim
    with pytest.raises(ValueError, match="'layers=3' is not field=value"):
        parse_args(["--model", "layers=3"])
    with pytest.raises(ValueError, match="num_layers needs a int, got 'x'"):
        parse_args(["--model", "num_layers=x"])
    with pytest.raises(ValueError, match="'seed=1' is not field=value"):
        parse_args(["--model", "seed=1"])
    assert dit_config(parse_args(["--model", "trail=0"])).trail is False
    assert dit_config(parse_args(["--model", "trail=true,scene=simple"])).trail is True
    with pytest.raises(ValueError, match="trail needs a bool, got 'maybe'"):
        parse_args(["--model", "trail=maybe"])


def test_each_stage_reruns_its_committed_record_from_the_stage_before():
    """--stage sets what the recorded run trained with (its clock's step count included), writes next to its
    record and starts from the previous stage's model; explicit flags still win."""
    previous = None
    for name, fields in STAGES.items():
        cfg = parse_args(["--stage", name])
        record = json.loads((RECORDS / name / "train.json").read_text())
        assert cfg.out == str(RECORDS / name) and cfg.max_steps == record["steps"]
        for key in ("preset", "seed", "batch_size", "lr", "warmup_steps", "ema_decay", "cond_dropout", "train_shift",
                    "train_text", "stats_clips", "compile"):
            assert getattr(cfg, key) == record["train"][key], (name, key)
        model = dataclasses.asdict(dit_config(cfg))
        assert {k: model[k] for k in record["model"]} == record["model"]  # stage 1 predates the trail field (off)
        assert cfg.init_from == ("" if previous is None else str(RECORDS / previous / "model"))
        previous = name
    assert load_model_config(SHIPPED_MODEL) == dit_config(parse_args(["--stage", previous]))
    assert parse_args(["--stage", "stage2_shift20", "--max-steps", "5"]).max_steps == 5
    assert parse_args([]).out == str(RECORDS / "run")


def test_a_fine_tune_starts_from_the_saved_weights_and_latent_space(tiny_run, tmp_path, capsys):
    from safetensors.torch import load_file

    _, base_dir = tiny_run
    base_cfg = load_model_config(base_dir)
    assert not base_cfg.trail  # the tiny run trained on plain clips (the default)
    cfg = TrainConfig(out=str(tmp_path), preset="tiny", max_steps=1, batch_size=2, stats_clips=4, device="cpu",
                      eval_clips=0, lr=1e-9, init_from=str(base_dir), model="trail=1", train_shift=50)
    tuned_dir = train(cfg)
    assert f"starting from {base_dir}" in capsys.readouterr().out
    base = load_file(next((base_dir / "transformer").glob("*.safetensors")))
    tuned = load_file(next((tuned_dir / "transformer").glob("*.safetensors")))
    assert base.keys() == tuned.keys()
    assert max((base[k] - tuned[k]).abs().max().item() for k in base) < 1e-5  # one step at lr 1e-9
    vae = lambda d: json.loads((d / "vae" / "config.json").read_text())  # noqa: E731
    assert vae(tuned_dir)["latents_mean"] == vae(base_dir)["latents_mean"]
    assert load_model_config(tuned_dir).trail is True
    assert json.loads((tmp_path / "train.json").read_text())["train"]["init_from"] == str(base_dir)
    with pytest.raises(ValueError, match=r"its model differs .*'num_layers': \(1, 2\)"):
        train(dataclasses.replace(cfg, out=str(tmp_path / "other"), model="num_layers=2"))
    with pytest.raises(FileNotFoundError, match="default_model.json is missing"):
        train(dataclasses.replace(cfg, out=str(tmp_path / "other"), init_from=str(tmp_path / "nowhere")))


def test_train_text_saves_the_trained_encoder_and_frozen_keeps_the_seeded_one(tiny_run, tmp_path):
    from transformers import T5EncoderModel

    def encoder_delta(model_dir, mcfg):
        saved = T5EncoderModel.from_pretrained(str(model_dir / "text_encoder"))
        seeded = build_text_encoder(mcfg, len(build_tokenizer(mcfg.text_tokens)))
        return max((a - b).abs().max().item() for a, b in zip(saved.parameters(), seeded.parameters()))

    _, frozen_dir = tiny_run
    assert encoder_delta(frozen_dir, TINY) == 0.0
    cfg = TrainConfig(out=str(tmp_path), preset="tiny", max_steps=3, batch_size=2, stats_clips=4, device="cpu",
                      eval_clips=0, train_text=True, lr=1e-2)
    assert encoder_delta(train(cfg), TINY) > 0.0


def test_a_run_stopped_and_resumed_step_by_step_ends_with_the_uninterrupted_weights(tiny_run, tmp_path):
    from safetensors.torch import load_file

    out, model_dir = tiny_run
    cfg = TrainConfig(out=str(tmp_path), preset="tiny", max_steps=4, batch_size=2, stats_clips=4, log_every=1,
                      device="cpu", eval_clips=0, stop_after_minutes=1e-9, spec_workers=1)  # stops after every step
    assert train(cfg) is None and (tmp_path / "checkpoint.pt").exists()
    resumed = [train(dataclasses.replace(cfg, resume=True)) for _ in range(3)]
    assert resumed[:2] == [None, None] and resumed[2] is not None
    assert not (tmp_path / "checkpoint.pt").exists()
    want = load_file(model_dir / "transformer" / "diffusion_pytorch_model.safetensors")
    got = load_file(resumed[2] / "transformer" / "diffusion_pytorch_model.safetensors")
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, msg=name)
    assert (tmp_path / "loss.csv").read_text().splitlines()[0] == (out / "loss.csv").read_text().splitlines()[0]
    assert len((tmp_path / "loss.csv").read_text().splitlines()) == 5  # header + one row per step, no repeats


def test_resume_refuses_a_missing_checkpoint_or_other_settings(tmp_path):
    cfg = TrainConfig(out=str(tmp_path), preset="tiny", max_steps=4, batch_size=2, stats_clips=4, log_every=1,
                      device="cpu", eval_clips=0, stop_after_minutes=1e-9)
    with pytest.raises(FileNotFoundError, match="checkpoint.pt does not exist"):
        train(dataclasses.replace(cfg, resume=True))
    train(cfg)
    with pytest.raises(ValueError, match="batch_size"):
        train(dataclasses.replace(cfg, resume=True, batch_size=3))


def _torchrun(out_dir, *extra):
    """The tiny_run schedule under torchrun with 2 CPU processes (gloo); the finished process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).parents[2]
    env = dict(os.environ, PYTHONPATH=f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "eval.default_model.train", "--out", str(out_dir), "--preset", "tiny", "--max-steps", "4",
           "--batch-size", "2", "--stats-clips", "4", "--log-every", "1", "--device", "cpu", "--eval-clips", "0",
           *extra]
    done = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x 2 processes" in done.stdout
    return done


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one(tiny_run, tmp_path):
    """torchrun with 2 CPU processes, each rendering half of every batch, ends with the weights of the
    single-process run of the same schedule (up to float summation order)."""
    from safetensors.torch import load_file

    out, model_dir = tiny_run
    _torchrun(tmp_path)
    meta = json.loads((tmp_path / "train.json").read_text())
    assert meta["processes"] == 2 and meta["steps"] == 4
    want = load_file(model_dir / "transformer" / "diffusion_pytorch_model.safetensors")
    got = load_file(tmp_path / "model" / "transformer" / "diffusion_pytorch_model.safetensors")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)
    losses = [r.split(",")[1] for r in (tmp_path / "loss.csv").read_text().splitlines()[1:]]
    single = [r.split(",")[1] for r in (out / "loss.csv").read_text().splitlines()[1:]]
    assert [float(a) for a in losses] == pytest.approx([float(a) for a in single], rel=1e-4)


def test_batch_must_split_over_the_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    from eval.default_model import train as train_module

    ranks = train_module._Ranks(torch.device("cpu"))
    ranks.world = 3  # as if started by torchrun with 3 processes (no process group needed to fail first)
    cfg = TrainConfig(out=str(tmp_path), preset="tiny", max_steps=1, batch_size=4, device="cpu", eval_clips=0)
    with pytest.raises(ValueError, match="batch_size=4 does not split over 3 processes"):
        train_module._train(cfg, ranks)


@pytest.mark.slow
def test_two_processes_stop_and_resume_together(tiny_run, tmp_path):
    """Stopped after every step and resumed, a 2-process run still ends with the single-process weights."""
    from safetensors.torch import load_file

    _, model_dir = tiny_run
    assert "stopped at step 1 of 4" in _torchrun(tmp_path, "--stop-after-minutes", "1e-9").stdout
    for step in (2, 3):
        assert f"stopped at step {step} of 4" in _torchrun(tmp_path, "--stop-after-minutes", "1e-9", "--resume").stdout
    assert "saved" in _torchrun(tmp_path, "--stop-after-minutes", "1e-9", "--resume").stdout
    assert json.loads((tmp_path / "train.json").read_text())["steps"] == 4
    want = load_file(model_dir / "transformer" / "diffusion_pytorch_model.safetensors")
    got = load_file(tmp_path / "model" / "transformer" / "diffusion_pytorch_model.safetensors")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)
