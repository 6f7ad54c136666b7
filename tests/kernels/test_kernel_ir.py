"""The compiler pipelines the gathered K/V loads of the sparse kernel (compiled for sm_90 on the CPU)."""
from eval.kernel_ir import main, schedule
from svg2.kernels.varblock import default_config


def test_default_config_prefetches_kv_beyond_the_next_tile():
    cfg = default_config(128)
    info = schedule(cfg)
    assert info["kv_slots"] == [cfg.num_stages, cfg.num_stages]  # K and V buffered num_stages deep
    # The wait before a tile's QK dot leaves later tiles' copies in flight (0 would mean no prefetch).
    assert info["loop_waits"] and info["loop_waits"][0] > 0
    assert info["shared_bytes"] <= 228 * 1024 // 2  # two CTAs per SM on Hopper


def test_cli_prints_the_schedule(capsys):
    info = main(["--config", "M64 N64 w4 s2 c16"])
    assert info["kv_slots"] == [2, 2]
    assert "loop_waits" in capsys.readouterr().out
