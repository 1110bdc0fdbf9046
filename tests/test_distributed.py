"""Data-parallel training on MPI (refssm.distributed, refssm.train): `mpiexec -n 2` equals K = 1 with the
same global batch; the sum over ranks is the rank-order sum, bit for bit; synchronised BatchNorm equals
BatchNorm on the global batch; a killed or hung rank ends the job within the timeout, the checkpoint
stays intact and a resume at K = 1 (or again at K = 2) continues it.

Stated equality (float64, the model below, 8 steps of AdamW): K = 2 against K = 1 with the same global
batch to TOL absolute on every parameter and BatchNorm statistic (measured: 6e-12, in enc.b, whose true
gradient is zero under the BatchNorm that follows it, so it moves by rounding noise / Adam's eps); K = 2
against K = 2 bit for bit.

The MPI tests need `mpiexec` and mpi4py (pip install '.[dist]'); they skip, saying so, without them.
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from refssm import checkpoint, distributed, ops, train

TOL = 1e-9
STEPS = 16
TIMEOUT = 4                 # --dist-timeout of the fault tests, seconds
MODEL = ["--H", "16", "--N", "8", "--layers", "2", "--dtype", "float64", "--dropout", "0.1"]
# batch 15 over 2 ranks: shards of 8 and 7 examples, so the loss weights (8/15, 7/15) matter
TRAIN = ["--batch-size", "15", "--seed", "1"]
MODEL_OVERRIDES = dict(H=16, N=8, n_layers=2, dtype="float64", dropout=0.1)
TRAIN_OPTIONS = dict(batch_size=15, seed=1)


def _mpiexec():
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
                               reason="needs mpiexec and mpi4py (pip install '.[dist]'): none found beside "
                                      f"{sys.executable} or on PATH")


def _launcher(n):
    """mpiexec -n n, with Open MPI's --allow-run-as-root (and --oversubscribe) where it needs them."""
    cmd = [MPIEXEC, "-n", str(n)]
    version = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True).stdout
    if "Open MPI" in version or "OpenRTE" in version:
        cmd += ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return cmd


def _train_cmd(n, *args):
    return _launcher(n) + [sys.executable, "-m", "refssm.cli", "train", *args]


def _run(cmd, tmp_path, timeout=240):
    """Run from tmp_path (the source tree's refssm/ must not shadow the installed package: test_train)."""
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def _load(out):
    return checkpoint.load(os.path.join(out, train.CKPT_NAME))


def _losses(out):
    with open(os.path.join(out, train.METRICS_NAME)) as f:
        return [e["loss"] for e in map(json.loads, f) if "loss" in e]            # the steps' entries


def _quiet(*args, **kwargs):
    pass


def _k1(model, out, stop_after, resume=False):
    """The K = 1 run in this process (no launcher here: distributed.world() is Local)."""
    if resume:
        return train.run(out=out, resume=True, stop_after=stop_after, log=_quiet)
    return train.run(model, out, stop_after=stop_after, log=_quiet, model_overrides=MODEL_OVERRIDES,
                     **TRAIN_OPTIONS)


def _assert_close(a, b, tol):
    """Same step and names; every parameter and BatchNorm statistic within tol (0: bit for bit)."""
    assert a.step == b.step
    for name in ("params", "extra"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.keys() == y.keys()
        for k in x:
            if tol == 0:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{name}[{k!r}]")
            else:
                np.testing.assert_allclose(x[k], y[k], rtol=0, atol=tol, err_msg=f"{name}[{k!r}]")


@pytest.fixture(scope="module")
def k2_spikingssm(tmp_path_factory):
    """An uninterrupted mpiexec -n 2 run of SpikingSSM (post-norm BatchNorm, dropout): STEPS steps."""
    tmp = tmp_path_factory.mktemp("k2")
    out = str(tmp / "run")
    _run(_train_cmd(2, "--out", out, "--stop-after", str(STEPS), *MODEL, *TRAIN), tmp)
    return out


# --------------------------------------------------------------------------------------------------
# The pieces: shards, the sum over ranks, synchronised BatchNorm
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, K", [(15, 2), (7, 3), (3, 3), (2, 5), (1000, 7)])
def test_shards_partition_the_batch(n, K):
    bounds = [distributed.shard_bounds(n, r, K) for r in range(K)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))                 # contiguous, in rank order
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


class _Threads:
    """K in-process 'ranks' (threads) whose sum is the rank-order sum: distributed.Comm.sum's contract."""

    def __init__(self, K):
        self.K, self.slots, self.barrier = K, [None] * K, threading.Barrier(K)

    def sum_for(self, rank):
        def sum_(a):
            self.slots[rank] = np.array(a)
            self.barrier.wait()
            out = distributed.ordered_sum(np.stack(self.slots))
            self.barrier.wait()
            return out
        return sum_

    def run(self, f):
        results = [None] * self.K

        def target(r):
            results[r] = f(r, self.sum_for(r))
        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.K)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results


@pytest.mark.parametrize("shape", [(11, 4, 9), (11, 4)])
def test_synchronised_batch_norm_equals_the_global_batch(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 3 + 5
    gamma, beta, rm, rv = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4), rng.random(4) + 1
    gy = rng.standard_normal(shape)
    y, ctx, rm1, rv1 = ops.batch_norm(x, gamma, beta, rm, rv, True, momentum=0.3)
    gx, ggamma, gbeta = ops.batch_norm_vjp(ctx, gy)
    cuts = [0, 5, 6, 11]                                                       # shards of 5, 1 and 5 examples

    def rank(r, sum_):
        s = slice(cuts[r], cuts[r + 1])
        y_r, ctx_r, rm_r, rv_r = ops.batch_norm(x[s], gamma, beta, rm, rv, True, momentum=0.3, allreduce=sum_)
        return (y_r, rm_r, rv_r) + ops.batch_norm_vjp(ctx_r, gy[s])

    out = _Threads(3).run(rank)
    np.testing.assert_allclose(np.concatenate([o[0] for o in out]), y, rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.concatenate([o[3] for o in out]), gx, rtol=0, atol=1e-13)
    for o in out:                                                              # the same statistics everywhere
        np.testing.assert_allclose(o[1], rm1, rtol=1e-14)
        np.testing.assert_allclose(o[2], rv1, rtol=1e-14)
    np.testing.assert_allclose(sum(o[4] for o in out), ggamma, rtol=1e-13)
    np.testing.assert_allclose(sum(o[5] for o in out), gbeta, rtol=1e-13)


def test_batch_norm_refuses_a_non_callable_allreduce():
    with pytest.raises(ValueError, match="allreduce must be None or a function"):
        ops.batch_norm(np.ones((2, 3, 4)), np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), True, allreduce=1)


SUM_SCRIPT = """
import numpy as np
from refssm import distributed
comm = distributed.world(timeout=30)
assert comm.size == 3, comm.size
rng = np.random.default_rng(comm.rank)
for n, dtype in [(5, np.float64), (2, np.float64), (40_000, np.float32), (100_003, np.float64)]:
    a = (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n)).astype(dtype)
    total = comm.sum(a)                       # n * itemsize >= SMALL_BYTES: reduce-scatter + allgather
    rows = np.empty((3, n), dtype)
    comm.comm.Allgather(a, rows)
    assert total.dtype == dtype and np.array_equal(total, (rows[0] + rows[1]) + rows[2]), n
    comm.check_same(distributed.digest(total), "sums")
open(f"ok{comm.rank}", "w").close()
"""


@needs_mpi
def test_sum_over_ranks_is_the_rank_order_sum_on_every_rank(tmp_path):
    script = tmp_path / "sum.py"
    script.write_text(SUM_SCRIPT)
    _run(_launcher(3) + [sys.executable, str(script)], tmp_path)
    assert sorted(p.name for p in tmp_path.glob("ok*")) == ["ok0", "ok1", "ok2"]      # every rank got through


def test_launched_without_mpi4py_is_an_error(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "4")
    monkeypatch.setitem(sys.modules, "mpi4py", None)                         # import mpi4py fails
    with pytest.raises(ValueError, match=r"one of 4 ranks .* mpi4py is not installed: pip install 'refssm\[dist\]'"):
        distributed.world()
    monkeypatch.setenv("REFSSM_MPI", "yes")
    with pytest.raises(ValueError, match="REFSSM_MPI must be 0 or 1"):
        distributed.world()
    monkeypatch.setenv("REFSSM_MPI", "0")
    assert distributed.world().size == 1


class _FourRanks(distributed.Local):
    size = 4


@pytest.mark.parametrize("batch_size, what", [(2, r"batches of 2 example\(s\)"), (314, r"a last batch of 3 example\(s\)")])
def test_every_rank_needs_an_example_of_every_batch(tmp_path, batch_size, what):
    # digits: 1259 training examples; 1259 % 314 = 3 < 4 ranks
    with pytest.raises(ValueError, match=f"batch_size must give each of the 4 ranks an example of every batch: .*{what}"):
        train.run("spikingssm", str(tmp_path / "run"), log=_quiet, comm=_FourRanks(), batch_size=batch_size)


def test_dist_timeout_flag_is_checked(capsys):
    from refssm import cli

    assert cli.main(["train", "--dist-timeout", "0"]) == 2
    assert "refssm: error: --dist-timeout must be a number of seconds > 0" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Training: K = 2 equals K = 1; faults
# --------------------------------------------------------------------------------------------------

@needs_mpi
def test_two_ranks_equal_one_with_batch_norm(tmp_path, k2_spikingssm):
    ref = str(tmp_path / "k1")
    _k1("spikingssm", ref, STEPS)
    _assert_close(_load(k2_spikingssm), _load(ref), TOL)
    np.testing.assert_allclose(_losses(k2_spikingssm), _losses(ref), rtol=1e-12)


@needs_mpi
def test_two_ranks_equal_one_with_stochastic_spikes(tmp_path):
    k2, ref = str(tmp_path / "k2"), str(tmp_path / "k1")
    _run(_train_cmd(2, "--model", "pspikessm", "--out", k2, "--stop-after", "4", *MODEL, *TRAIN), tmp_path)
    _k1("pspikessm", ref, 4)
    _assert_close(_load(k2), _load(ref), TOL)


def _rank_pid(launcher, rank, deadline):
    """The pid of MPI rank `rank` started by the launcher process `launcher` (PMI_RANK or OMPI_COMM_WORLD_RANK)."""
    marks = {f"PMI_RANK={rank}".encode(), f"OMPI_COMM_WORLD_RANK={rank}".encode()}
    while time.time() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = set(f.read().split(b"\0"))
                if env & marks and _descends(int(pid), launcher.pid):
                    return int(pid)
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"rank {rank} of {launcher.args} not found")


def _descends(pid, ancestor):
    while pid > 1:
        if pid == ancestor:
            return True
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    return False


def _steps_logged(metrics):
    """Training steps rank 0 has logged (cheap to poll, unlike loading a checkpoint)."""
    with open(metrics) as f:
        return sum(1 for line in f if '"loss"' in line)


def _fault(tmp_path, signum):
    """Start an mpiexec -n 2 run with a checkpoint every step, send signum to rank 1 once step 3 is logged (step 2 saved);
    -> (run dir, seconds from the signal to the job's end, the job's output (stdout and stderr), its exit status)."""
    out = str(tmp_path / "run")
    job = subprocess.Popen(_train_cmd(2, "--out", out, "--stop-after", "200", "--ckpt-every", "1",
                                      "--dist-timeout", str(TIMEOUT), *MODEL, *TRAIN),
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        victim = _rank_pid(job, 1, deadline)
        metrics = os.path.join(out, train.METRICS_NAME)
        while time.time() < deadline and not (os.path.exists(metrics) and _steps_logged(metrics) >= 3):
            assert job.poll() is None, job.stdout.read()
            time.sleep(0.005)
        os.kill(victim, signal.SIGSTOP)          # freeze it at once (the other rank stops at its next sum) ...
        if signum != signal.SIGSTOP:
            os.kill(victim, signum)              # ... then deliver the fault: the run cannot outrun the check
        t0 = time.time()
        err, _ = job.communicate(timeout=TIMEOUT + 30)
        return out, time.time() - t0, err, job.returncode
    finally:
        if job.poll() is None:
            job.kill()


@needs_mpi
def test_killed_rank_ends_the_job_and_a_resume_at_one_rank_continues(tmp_path, k2_spikingssm):
    out, seconds, err, status = _fault(tmp_path, signal.SIGKILL)
    assert status != 0 and seconds < TIMEOUT + 10, (seconds, err)
    # MPICH's hydra sees the death at once and says so; elsewhere the survivor's deadline does
    assert "BAD TERMINATION" in err or "killed" in err.lower() or "a rank has died" in err, err
    saved = _load(out)                                                         # intact: loads, checksum holds
    assert 2 <= saved.step < STEPS, f"killed at step {saved.step}: the test needs it before step {STEPS}"
    assert _losses(out)[:saved.step] == _losses(k2_spikingssm)[:saved.step]    # K = 2 twice: bit for bit
    _k1(None, out, STEPS, resume=True)
    _assert_close(_load(out), _load(k2_spikingssm), TOL)


@needs_mpi
def test_hung_rank_ends_the_job_within_the_timeout_and_a_resume_at_two_ranks_is_exact(tmp_path, k2_spikingssm):
    out, seconds, err, status = _fault(tmp_path, signal.SIGSTOP)
    assert status != 0 and TIMEOUT <= seconds < TIMEOUT + 10, (seconds, err)
    assert f"no answer from the other ranks for {TIMEOUT} s" in err and "a rank has died or hangs" in err, err
    assert f"resume from the last checkpoint with: refssm train --resume --out {out}" in err, err
    saved = _load(out)
    assert 2 <= saved.step < STEPS, f"stopped at step {saved.step}: the test needs it before step {STEPS}"
    _run(_train_cmd(2, "--out", out, "--resume", "--stop-after", str(STEPS)), tmp_path)
    _assert_close(_load(out), _load(k2_spikingssm), 0)
