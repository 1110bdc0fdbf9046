"""refssm.train and the CLI: resume gives the same parameters as an uninterrupted run, also after
SIGKILL; checkpoints are loadable by eval/info; bad options are rejected."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from refssm import checkpoint, train

TINY = ["--H", "8", "--N", "4", "--layers", "1", "--epochs", "2", "--batch-size", "64", "--seed", "3"]
TINY_MODEL = dict(H=8, N=4, n_layers=1)
TINY_TRAIN = dict(epochs=2, batch_size=64, seed=3)


def _params(out):
    return checkpoint.load(os.path.join(out, train.CKPT_NAME)).params


def _quiet(*args, **kwargs):
    pass


@pytest.mark.parametrize("model", ["spikingssm", "pspikessm"])
def test_resume_equals_uninterrupted(tmp_path, model):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train.run(model, full, log=_quiet, model_overrides=dict(TINY_MODEL, dropout=0.1), **TINY_TRAIN)
    assert train.run(model, part, stop_after=7, log=_quiet, model_overrides=dict(TINY_MODEL, dropout=0.1),
                     **TINY_TRAIN) is None
    assert checkpoint.load(os.path.join(part, train.CKPT_NAME)).step == 7
    train.run(model, part, resume=True, log=_quiet)
    a, b = _params(full), _params(part)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _cli(*args):
    return [sys.executable, "-m", "refssm.cli", *args]


def _run(cmd, tmp_path, **kwargs):
    """Run from tmp_path: `python -m` puts the working directory first on sys.path, and the source tree's
    refssm/ would shadow the installed package (whose kernels/ and datasets/ are mapped into it)."""
    return subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, text=True, **kwargs)


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    _run(_cli("train", "--out", full, *TINY), tmp_path, env=env)
    ckpt = os.path.join(part, train.CKPT_NAME)
    proc = subprocess.Popen(_cli("train", "--out", part, "--ckpt-every", "1", *TINY), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (os.path.exists(ckpt) and checkpoint.load(ckpt).step >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint.load(ckpt).step
    final_step = checkpoint.load(os.path.join(full, train.CKPT_NAME)).step
    assert 3 <= killed_at < final_step, (killed_at, final_step)
    out = _run(_cli("train", "--out", part, "--resume"), tmp_path, env=env)
    assert f"resumed {ckpt} at step {killed_at}" in out.stdout
    a, b = _params(full), _params(part)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    last = out.stdout.strip().splitlines()[-1]
    fields = dict(kv.split("=", 1) for kv in last.split())
    assert {"test_acc", "spike_rate", "energy_uJ"} <= fields.keys()
    info = _run(_cli("info", ckpt), tmp_path).stdout
    assert "format_version=1" in info and f"step={final_step}" in info
    ev = _run(_cli("eval", fields["checkpoint"]), tmp_path).stdout                # the checkpoint the test used
    assert dict(kv.split("=", 1) for kv in ev.strip().splitlines()[-1].split())["acc"] == fields["test_acc"]


@pytest.mark.parametrize("options, match", [
    (dict(epochs=0), "epochs"),
    (dict(lr=-1.0), "lr"),
    (dict(batch_size=0), "batch_size"),
    (dict(warmup=1.5), "warmup"),
    (dict(learning_rate=0.1), "unknown training options"),
])
def test_bad_training_options(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        train.run("spikingssm", str(tmp_path), log=_quiet, **options)


def test_bad_model_options(tmp_path):
    with pytest.raises(ValueError, match="unknown configuration keys"):
        train.run("spikingssm", str(tmp_path), log=_quiet, model_overrides={"depth": 3})
    with pytest.raises(ValueError, match="model"):
        train.run("mamba", str(tmp_path), log=_quiet)


def test_a_new_run_never_overwrites_another(tmp_path):
    out = str(tmp_path / "run")
    train.run("spikingssm", out, log=_quiet, stop_after=1, model_overrides=TINY_MODEL, **TINY_TRAIN)
    with pytest.raises(ValueError, match="already holds a run.*--resume.*--force"):
        train.run("spike_ssm", out, log=_quiet, model_overrides=TINY_MODEL, **TINY_TRAIN)
    assert train.run("spike_ssm", out, force=True, log=_quiet, stop_after=1, model_overrides=TINY_MODEL,
                     **TINY_TRAIN) is None
    assert checkpoint.load(os.path.join(out, train.CKPT_NAME)).config["model"]["model"] == "spike_ssm"


def test_resume_refuses_contradicting_flags_and_extends_epochs(tmp_path):
    out = str(tmp_path / "run")
    train.run("spikingssm", out, log=_quiet, stop_after=3, model_overrides=TINY_MODEL, **TINY_TRAIN)
    for kwargs, what in ((dict(model="spike_ssm"), "model='spike_ssm'"), (dict(lr=0.5), "lr=0.5"),
                         (dict(task="fashion"), "task='fashion'"), (dict(model_overrides={"H": 16}), "H=16"),
                         (dict(epochs=1), "epochs=1")):
        kwargs = dict(kwargs)
        model = kwargs.pop("model", None)
        with pytest.raises(ValueError, match="contradict.*" + what.replace("(", r"\(")):
            train.run(model, out, resume=True, log=_quiet, **kwargs)
    summary = train.run(None, out, resume=True, log=_quiet, epochs=3)
    steps_per_epoch = -(-1259 // 64)
    assert summary["steps"] == 3 * steps_per_epoch


@pytest.mark.parametrize("task, head, metric", [("adding", "value", "test_loss"), ("copy", "sequence", "test_acc"),
                                                ("recall", "class", "test_acc")])
def test_every_target_kind_trains(tmp_path, task, head, metric):
    from refssm import datasets

    data = datasets.load(task)
    assert train.head_of(data)[0] == head
    summary = train.run("spikingssm", str(tmp_path / task), log=_quiet, stop_after=None, task=task, epochs=1,
                        batch_size=256, model_overrides=dict(H=8, N=4, n_layers=1))
    assert np.isfinite(summary[metric])


def test_task_options_reach_the_loader_and_the_checkpoint(tmp_path):
    out = str(tmp_path / "run")
    train.run("spikingssm", out, log=_quiet, stop_after=1, task="adding", task_options={"length": 12, "n_train": 40,
                                                                                         "n_val": 8, "n_test": 8},
              batch_size=8, model_overrides=TINY_MODEL)
    ckpt = checkpoint.load(os.path.join(out, train.CKPT_NAME))
    assert ckpt.config["train"]["task_options"] == {"length": 12, "n_train": 40, "n_val": 8, "n_test": 8}
    summary = train.run(None, out, resume=True, log=_quiet)
    assert summary["steps"] == 10 * 5                                           # 40 examples, batch 8, 10 epochs


def test_small_steps_run_on_one_thread():
    cores = len(os.sched_getaffinity(0))
    assert train.threads_for(32 * 64 * 64) == 1                                  # the README's digits step
    assert train.threads_for(16 * 128 * 1024) == cores                          # the canonical step
