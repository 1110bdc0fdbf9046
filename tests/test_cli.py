"""The refssm command line forgives mistakes: one line naming the option and what is allowed, a non-zero
exit, no traceback; nothing overwritten; Ctrl-C saves and says how to resume; pipes closed early."""

import os
import signal
import subprocess
import sys
import time

import pytest

from refssm import checkpoint, train

TINY = ["--H", "8", "--N", "4", "--layers", "1", "--epochs", "1", "--batch-size", "64"]


def _cli(tmp_path, *args, **kwargs):
    """Run `python -m refssm.cli ARGS` from tmp_path (so the source tree cannot shadow the installed package)."""
    return subprocess.run([sys.executable, "-m", "refssm.cli", *args], cwd=tmp_path, capture_output=True, text=True,
                          **kwargs)


def _one_line_error(res, *fragments):
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, res.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.mark.parametrize("args, fragments", [
    (["train", "--task", "digitz"], ["--task", "invalid choice", "digits"]),
    (["train", "--epochs", "0"], ["--epochs must be an integer >= 1"]),
    (["train", "--lr", "-1"], ["--lr must lie in (0, inf)"]),
    (["train", "--dtype", "float16"], ["--dtype", "float32"]),
    (["train", "--model", "mamba"], ["--model", "spikingssm"]),
    (["train", "--task", "mnist"], ["--data-dir is required"]),
    (["eval", "missing.h5"], ["missing.h5"]),
    (["info", "missing.h5"], ["missing.h5"]),
    (["plot", "no-such-run"], ["metrics.jsonl"]),
    (["generate", "no-such-run"], ["no-such-run"]),
])
def test_mistakes_print_one_line(tmp_path, args, fragments):
    _one_line_error(_cli(tmp_path, *args), *fragments)


def test_empty_data_dir_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line_error(_cli(tmp_path, "train", "--task", "mnist", "--data-dir", "empty"), "empty")


def test_version_and_help_show_choices_and_defaults(tmp_path):
    import refssm

    assert _cli(tmp_path, "--version").stdout.strip() == f"refssm {refssm.__version__}"
    help_text = " ".join(_cli(tmp_path, "train", "--help").stdout.split())
    for fragment in ("{auto,numpy,numba,cupy}", "{float32,float64}", "default 10", "default float32", "--causal",
                     "{binary_s4d,spikingssm,spike_ssm,pspikessm,longspike}"):
        assert fragment in help_text, fragment


def test_a_run_is_never_overwritten_and_resume_conflicts_are_named(tmp_path):
    ok = _cli(tmp_path, "train", "--out", "run", "--stop-after", "1", *TINY)
    assert ok.returncode == 0, ok.stderr
    _one_line_error(_cli(tmp_path, "train", "--out", "run", *TINY), "already holds a run", "--resume", "--force")
    _one_line_error(_cli(tmp_path, "train", "--out", "run", "--resume", "--model", "spike_ssm"),
                    "contradict", "model='spike_ssm'")
    _one_line_error(_cli(tmp_path, "train", "--out", "run", "--resume", "--lr", "0.5"), "contradict", "lr=0.5")


def test_info_into_a_closed_pipe_is_quiet(tmp_path):
    ok = _cli(tmp_path, "train", "--out", "run", "--stop-after", "1", *TINY)
    assert ok.returncode == 0, ok.stderr
    cmd = f"{sys.executable} -m refssm.cli info run/checkpoint.h5 | head -1"
    res = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True)
    assert res.stdout.startswith("checkpoint run/checkpoint.h5")
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "refssm.cli", "train", "--out", "run", *TINY[:-4],
                             "--epochs", "50", "--batch-size", "16"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            # a job started in the background by a shell inherits SIGINT ignored, and Python then
                            # installs no KeyboardInterrupt handler: give the child the default disposition
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    metrics = tmp_path / "run" / train.METRICS_NAME
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"no exit within 300 s of Ctrl-C; stdout: {out[-2000:]} stderr: {err[-2000:]}") from None
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "resume with: refssm train --resume --out run" in out
    assert checkpoint.load(tmp_path / "run" / train.CKPT_NAME).step >= 3


def test_plot_draws_the_curves_or_names_the_extra(tmp_path):
    ok = _cli(tmp_path, "train", "--out", "run", "--stop-after", "3", *TINY)
    assert ok.returncode == 0, ok.stderr
    res = _cli(tmp_path, "plot", "run")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _one_line_error(res, "pip install 'refssm[plots]'")
        return
    assert res.returncode == 0, res.stderr
    png = tmp_path / "run" / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
