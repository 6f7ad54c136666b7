"""What a user gets for bad input and failed rows: one line naming the value, before any expensive work, and a
non-zero exit status when anything failed."""
import sys

import pytest

from eval.results import ResultStore
from tests.eval.conftest import CONF, TINY, run_cli, run_sweep


@pytest.mark.parametrize("overrides,message", [
    (["method=svg2", "method.num_q_clusters=0"], "num_q_clusters=0; expected a positive integer"),
    (["method=svg2", "method.num_q_clusters=100000"], "num_q_clusters=100000 exceeds the sequence length S=48"),
    (["method=positional", "method.top_p=1.5"], r"top_p=1.5 is outside \(0, 1\]"),
    (["workload.seeds=[]"], r"workload.seeds=\[\]; expected at least one seed"),
    (["workload.steps=0"], "workload.steps=0; expected a positive integer"),
    (["workload=attention", "workload.source=synthetic", "workload.head_dim=0"],
     "workload.head_dim=0; expected a positive integer"),
    (["model=wan_t2v_1.3b"], "model.path is required for model=wan2.1-t2v-1.3b"),
    (["metrics.lpips=[vgg]"], "LPIPS vgg backbone .* is missing"),
])
def test_bad_input_is_named_before_any_row_runs(overrides, message, tmp_path, cache_dir, monkeypatch):
    from eval.models import ModelConfig

    monkeypatch.setattr(ModelConfig, "load", lambda *a: pytest.fail("the pipeline was loaded"))
    tiny = [o for o in TINY if "warmup_steps" not in o or "workload=attention" not in overrides]
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run_sweep(*tiny, f"results_dir={tmp_path}", f"cache_dir={cache_dir}", *overrides)
    assert not (tmp_path / "rows").exists()


@pytest.mark.slow
def test_the_cli_says_bad_input_in_one_line_and_exits_2(tmp_path, cache_dir):
    proc = run_cli(*TINY, f"results_dir={tmp_path}", f"cache_dir={cache_dir}", "workload.seeds=[]", "report=false")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == "eval.sweep: workload.seeds=[]; expected at least one seed"
    proc = run_cli(*TINY, f"results_dir={tmp_path}", f"cache_dir={cache_dir}", "method=svg2", "method.top_p=abc")
    assert proc.returncode != 0 and "method.top_p" in proc.stderr and "abc" in proc.stderr


def run_main(monkeypatch, *overrides) -> int:
    """``python -m eval.sweep ...`` in this process (so a test can make a row fail); returns the exit status."""
    from eval.sweep import main

    monkeypatch.setattr(sys, "argv", ["eval/sweep.py", f"--config-path={CONF}", *overrides])
    try:
        main()
    except SystemExit as e:
        return e.code or 0
    return 0


def test_failed_rows_are_counted_and_exit_non_zero(tmp_path, cache_dir, monkeypatch, capsys):
    from svg2.methods import SVG2Method

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(SVG2Method, "plan", out_of_memory)
    common = [*TINY, f"results_dir={tmp_path}", f"cache_dir={cache_dir}", "report=false",
              "sweep.methods=[{name: dense}, {name: svg2}]", "hydra.run.dir=" + str(tmp_path / "hydra")]
    assert run_main(monkeypatch, *common) == 1
    out = capsys.readouterr()
    assert "1 ok, 1 failed, 0 skipped (already done)" in out.out and "out of memory (simulated)" in out.err
    assert run_main(monkeypatch, *common, "allow_failures=true") == 0  # the old behaviour, when asked for
    assert "0 ok, 1 failed, 1 skipped (already done)" in capsys.readouterr().out  # the failed row is retried


def test_resume_says_once_how_many_rows_it_skips(tmp_path, cache_dir, capsys):
    args = [*TINY, f"results_dir={tmp_path}", f"cache_dir={cache_dir}", "method=positional", "workload.seeds=[0,1]"]
    first = run_sweep(*args)
    assert (first.ok, first.failed, first.skipped) == (2, 0, 0)
    capsys.readouterr()
    second = run_sweep(*args)
    assert (second.ok, second.skipped) == (0, 2)
    out = capsys.readouterr().out
    assert out.count("already done") == 1 and f"2 of 2 rows already done in {tmp_path}: skipped" in out
    assert len(ResultStore(tmp_path).rows()) == 2


def test_result_files_are_readable_by_others_and_the_commit_is_this_projects(tmp_path, monkeypatch):
    import os
    import subprocess

    from eval.results import FILE_MODE, _git_commit, atomic_write

    umask = os.umask(0)
    os.umask(umask)
    atomic_write(tmp_path / "a.json", b"{}")  # through mkstemp, which creates 0600
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == FILE_MODE == 0o666 & ~umask
    # A copy of the project without .git inside another repository records 'unknown', not that repository's HEAD.
    outer = tmp_path / "outer"
    (outer / "copy").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    subprocess.run(["git", "-C", str(outer), "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    (outer / "copy" / "pyproject.toml").write_text('[project]\nname = "svg2"\n')
    monkeypatch.delenv("SVG2_COMMIT", raising=False)
    assert _git_commit(outer / "copy") == ("unknown", None)
    monkeypatch.setenv("SVG2_COMMIT", "abc123")
    assert _git_commit(outer / "copy") == ("abc123", None)


@pytest.mark.slow
def test_a_log_file_gets_one_plain_line_per_row_and_no_bar(tmp_path, cache_dir):
    tiny = [o for o in TINY if not o.startswith("progress=")]
    proc = run_cli(*tiny, f"results_dir={tmp_path}", f"cache_dir={cache_dir}", "method=dense", "report=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[1/1] dense | 'a red striped square moves left over a b' seed 0: running" in proc.stdout
    assert "[1/1] ok, psnr inf" in proc.stdout and "1 ok, 0 failed, 0 skipped (already done)" in proc.stdout
    assert "\r" not in proc.stdout + proc.stderr and "\x1b[" not in proc.stdout + proc.stderr
    assert "divisible by" not in proc.stderr and "Expected types" not in proc.stderr
