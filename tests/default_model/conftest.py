import pytest

from eval.default_model.train import TrainConfig, train


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A 4-step CPU training run of the tiny preset: (output folder, model folder)."""
    out = tmp_path_factory.mktemp("tiny_run")
    cfg = TrainConfig(out=str(out), preset="tiny", max_steps=4, batch_size=2, stats_clips=4, log_every=1,
                      device="cpu", eval_clips=0)
    return out, train(cfg)
