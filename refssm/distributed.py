"""Data-parallel training on MPI (mpi4py): the communicator layer of `refssm train`.

    mpiexec -n K refssm train ...          # or srun, or any MPI launcher; pip install 'refssm[dist]'

Every rank iterates the same global batches (refssm.train) and takes a contiguous shard of each
(`Comm.shard`); gradients, batch-norm statistics and metrics are summed over ranks with `Comm.sum`. A
plain `refssm train` gets `Local`, the same code at K = 1, whose `sum` returns its argument: one process
computes exactly what it computed before data parallelism existed.

Reduction order (what makes a run reproducible). MPI's own Allreduce sums in a tree whose shape depends
on the implementation, K and the message size, so its result is not the rank-order sum. `Comm.sum`
defines the order itself: every element is summed over ranks in rank order,

    total = ((x_0 + x_1) + x_2) + ... + x_{K-1}          (x_r: rank r's array, elementwise)

and every rank computes the same bits. Two transports give these same bits:
  - small arrays (batch-norm statistics, metrics) and K = 2: Iallgather the K arrays, sum them in rank
    order on every rank (one round; rank r receives (K-1) n values);
  - large arrays at K > 2 (the one contiguous gradient buffer of a step): split the buffer into K
    chunks, Ialltoall so that rank c holds every rank's chunk c, sum those in rank order, Iallgather the
    summed chunks: a reduce-scatter then an allgather, 2 (K-1)/K n values per rank, the volume of a
    ring allreduce (Patarasuk & Yuan 2009), so the cost model of validation/bench_distributed.py holds.
So a run is bit-exact across repetitions for a fixed K. Against K = 1 with the same global batch it agrees
to rounding (the ranks' partial sums associate differently than one process's sum over the batch);
tests/test_distributed.py states and checks the tolerance.

Faults. Every collective is non-blocking and polled against a deadline (`timeout`, default
DEFAULT_TIMEOUT s, `refssm train --dist-timeout`): Test() in a tight loop for the first SPIN_S seconds (as
MPI's blocking calls do), then every POLL_S seconds. A rank that waits longer than the timeout for its
peers, or whose collective fails (mpi4py raises MPI.Exception: COMM_WORLD returns errors), prints one
line saying so, with `hint` (where the last checkpoint is and how to resume), and calls MPI_Abort, which
ends every rank: the job never hangs longer than the timeout. A launcher that sees a rank killed (MPICH's
hydra, Open MPI's mpiexec, srun --kill-on-bad-exit) ends the job at once with its own message; the
timeout covers the rest (a rank stopped or hung, a launcher that leaves survivors running). Rank 0 alone
writes checkpoints, atomically (refssm.checkpoint), so a fault never leaves a half-written one.

Threads (one core per rank). At K > 1, `world()` sets each rank's threads to the cores it may use
divided by the ranks on its node (the launcher's CPU binding, if any, is respected: a rank bound to c
cores gets c), or to $REFSSM_THREADS when that is set (at any K): Numba's through
numba.set_num_threads (the parallel kernels), the BLAS's through threadpoolctl.threadpool_limits
(numpy's matrix products), and scipy.fft's workers through refssm.ssm.set_fft_workers (the FFT convolutions).
So `mpiexec -n 2` on 2 cores runs one thread per rank; NUMBA_NUM_THREADS and OMP_NUM_THREADS need not
be set (they may be: NUMBA_NUM_THREADS caps what set_num_threads may ask for).

Launch detection. MPI is used when an MPI launcher started the process (one of LAUNCHER_VARIABLES is set:
MPICH's hydra, Intel MPI, Open MPI, PMIx, MVAPICH, srun --mpi=pmi2/pmix) or when REFSSM_MPI=1;
REFSSM_MPI=0 never uses it. A singleton (K = 1 under a launcher) is `Local`. Launched as one of K > 1
ranks without mpi4py is an error, not K copies of a single-process run writing the same files.

Running as root: MPICH's mpiexec (hydra) needs no flag; Open MPI's refuses unless given
--allow-run-as-root. On a cluster use the system MPI rather than the mpich wheel: pip install
--no-binary mpi4py mpi4py (built against the MPI that `mpicc` names) and launch with the site's mpiexec
or srun (srun --mpi=pmix or pmi2, as the site's MPI was built). The run directory must be on a
file system every rank sees: every rank reads the checkpoint on --resume (`check_same` refuses ranks
that loaded different ones).

GPU ranks (extension point; not implemented, see the README's Status: refssm runs no GPU code it has not
run). A CuPy rank would reduce device arrays with NCCL (cupy.cuda.nccl.NcclCommunicator), MPI serving
only to share NCCL's unique id:

    uid = comm.bcast(nccl.get_unique_id() if rank == 0 else None, root=0)     # mpi4py, host side
    nc = nccl.NcclCommunicator(K, uid, rank)                                   # one GPU per rank

A `NCCLComm(Comm)` would implement `sum` with the same rank-order contract (ncclAllGather of the K
buffers, then a fixed-order sum on the device; or ncclReduceScatter + ncclAllGather where NCCL's own
order is accepted and documented), its deadline by polling the stream with cupy's Event.query() and
nc.abort() on timeout, and `check_same` on host digests through MPI. `world()` would return it when the
model's backend is "cupy"; refssm.train only calls rank, size, shard, sum, barrier, check_same and fail,
so nothing else changes.
"""

import os
import sys
import time
import zlib

import numpy as np

DEFAULT_TIMEOUT = 300.0     # seconds a rank waits for its peers in one collective before aborting the job
SPIN_S = 1.0                # poll Test() without sleeping this long (MPI progresses only inside MPI calls)
POLL_S = 2e-3               # then sleep this long between polls
SMALL_BYTES = 64 * 1024     # below this (or at K <= 2) `sum` is one Iallgather; above it reduce-scatter
LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")


def shard_bounds(n, rank, size):
    """[lo, hi) of rank's contiguous shard when n examples are split over `size` ranks: the first
    n % size ranks get one example more (numpy.array_split's rule)."""
    q, r = divmod(n, size)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (rank < r)


def ordered_sum(rows):
    """rows (K, ...) -> rows[0] + rows[1] + ... + rows[K-1], summed in that order (a new array)."""
    out = rows[0].copy()
    for row in rows[1:]:
        out += row
    return out


def flatten(arrays, dtype):
    """A dict of arrays -> one contiguous 1-D buffer of `dtype`, in the dict's order."""
    return np.concatenate([np.ravel(a) for a in arrays.values()]).astype(dtype, copy=False)


def unflatten(buf, like):
    """The inverse of `flatten`: a dict shaped (and typed) like `like`, read from buf in like's order."""
    out, at = {}, 0
    for k, v in like.items():
        out[k] = buf[at:at + v.size].reshape(v.shape).astype(v.dtype, copy=False)
        at += v.size
    if at != buf.size:
        raise ValueError(f"buf must hold {at} values (the arrays of `like`), got {buf.size}")
    return out


def digest(*arrays):
    """A CRC-32 of the arrays' bytes, to check that every rank holds the same values."""
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a).view(np.uint8), crc)
    return crc


class Local:
    """K = 1: one process, no MPI. Every method is the identity of its K-rank meaning."""

    rank, size, local_size, name = 0, 1, 1, "single process"
    timeout = DEFAULT_TIMEOUT
    threads = None      # the threads per rank `world` set (None: left as they were)
    hint = ""           # appended to a fault message (train sets: where the last checkpoint is, how to resume)
    where = ""          # what the job was doing (train sets: "step 12")

    def shard(self, n):
        """[lo, hi) of this rank's share of n examples."""
        return shard_bounds(n, self.rank, self.size)

    def sum(self, a):
        """The elementwise sum over ranks of each rank's array `a` (module doc: the order). K = 1: `a` itself."""
        return a

    def barrier(self):
        """Return when every rank has called it."""

    def check_same(self, value, what):
        """Abort unless every rank passes the same integer `value` (e.g. a `digest`) for `what`."""

    def fail(self, message, code=1):
        """End the whole job after printing `message` (one line, on stderr). K = 1: raise SystemExit."""
        print(f"refssm: {message}", file=sys.stderr, flush=True)
        raise SystemExit(code)


class MPIComm(Local):
    """K > 1 ranks of MPI_COMM_WORLD through mpi4py, every collective polled against `timeout` seconds."""

    def __init__(self, comm, timeout=DEFAULT_TIMEOUT):
        from mpi4py import MPI

        self.MPI, self.comm, self.timeout = MPI, comm, float(timeout)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.local_size = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
        self.name = " ".join(MPI.Get_library_version().split("\n")[0].split())    # "MPICH Version: 5.0.2"

    def _wait(self, request, what):
        start = time.monotonic()
        while True:
            try:
                if request.Test():
                    return
            except self.MPI.Exception as e:
                self.fail(f"rank {self.rank} of {self.size}: {what} failed at {self.where or 'start-up'} "
                          f"({e.Get_error_string().strip()}): a rank has died{self.hint}")
            waited = time.monotonic() - start
            if waited > self.timeout:
                self.fail(f"rank {self.rank} of {self.size}: no answer from the other ranks for {self.timeout:g} s "
                          f"in {what} at {self.where or 'start-up'}: a rank has died or hangs (--dist-timeout)"
                          f"{self.hint}")
            if waited > SPIN_S:
                time.sleep(POLL_S)

    def sum(self, a):
        a = np.asarray(a)
        flat, K = np.ascontiguousarray(a).reshape(-1), self.size
        if K <= 2 or flat.nbytes < SMALL_BYTES or flat.size < K:
            rows = np.empty((K, flat.size), flat.dtype)
            self._wait(self.comm.Iallgather(flat, rows), "a sum over ranks (allgather)")
            return ordered_sum(rows).reshape(a.shape)
        chunk = -(-flat.size // K)
        send = np.zeros((K, chunk), flat.dtype)
        send.reshape(-1)[:flat.size] = flat
        parts = np.empty_like(send)                      # parts[r] = rank r's values of this rank's chunk
        self._wait(self.comm.Ialltoall(send, parts), "a sum over ranks (reduce-scatter)")
        mine = ordered_sum(parts)
        self._wait(self.comm.Iallgather(mine, send), "a sum over ranks (allgather)")
        return send.reshape(-1)[:flat.size].reshape(a.shape)

    def barrier(self):
        self._wait(self.comm.Ibarrier(), "a barrier")

    def check_same(self, value, what):
        rows = np.empty(self.size, np.int64)
        self._wait(self.comm.Iallgather(np.array([value], np.int64), rows), f"a check of {what}")
        if np.any(rows != rows[0]):
            self.fail(f"rank {self.rank} of {self.size}: the ranks hold different {what} "
                      f"({', '.join(f'rank {r}: {v:#x}' for r, v in enumerate(rows))}); is the run directory on a "
                      f"file system every rank sees, and are the ranks' refssm, numpy and data the same?")

    def fail(self, message, code=1):
        print(f"refssm: {message}", file=sys.stderr, flush=True)
        self.comm.Abort(code)


def _launched():
    """Whether an MPI launcher started this process (or REFSSM_MPI says to use MPI), and the K it announced."""
    forced = os.environ.get("REFSSM_MPI")
    if forced not in (None, "", "0", "1"):
        raise ValueError(f"REFSSM_MPI must be 0 or 1 (or unset: detect the launcher), got {forced!r}")
    size = next((int(os.environ[v]) for v in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
                 if os.environ.get(v, "").isdigit()), None)
    if forced == "0":
        return False, size
    return forced == "1" or any(v in os.environ for v in LAUNCHER_VARIABLES), size


def world(timeout=DEFAULT_TIMEOUT):
    """The communicator of this process: MPIComm over MPI_COMM_WORLD when started by an MPI launcher with
    K > 1 ranks, else Local. At K > 1 it also sets the threads per rank (module doc: Threads)."""
    timeout = float(timeout)
    if not timeout > 0:
        raise ValueError(f"dist_timeout must be a number of seconds > 0, got {timeout!r}")
    use_mpi, announced = _launched()
    comm = Local()
    if use_mpi:
        try:
            from mpi4py import MPI
        except ImportError:
            if announced and announced > 1:
                raise ValueError(f"this process is one of {announced} ranks started by an MPI launcher, but mpi4py "
                                 "is not installed: pip install 'refssm[dist]' (or mpi4py built against your "
                                 "MPI), or run without mpiexec") from None
            MPI = None
        if MPI is not None and MPI.COMM_WORLD.Get_size() > 1:
            comm = MPIComm(MPI.COMM_WORLD, timeout)
    threads = os.environ.get("REFSSM_THREADS")
    if threads is not None:
        if not threads.isdigit() or int(threads) < 1:
            raise ValueError(f"REFSSM_THREADS must be an integer >= 1 (threads per process), got {threads!r}")
        comm.threads = set_threads(int(threads))
    elif comm.size > 1:
        comm.threads = set_threads(cores_per_rank(comm.local_size))
    return comm


def cores_per_rank(local_size):
    """The cores one of `local_size` ranks on this node should use: the cores it is bound to when the
    launcher bound it to a subset, else its even share of the node's cores."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if usable < (os.cpu_count() or usable):
        return usable
    return max(1, usable // max(1, local_size))


_limits = []    # keeps threadpoolctl's limiter alive


def set_threads(n):
    """Numba (numba.set_num_threads), BLAS (threadpoolctl) and scipy.fft (refssm.ssm.set_fft_workers) threads := n."""
    import numba
    from threadpoolctl import threadpool_limits

    from refssm import ssm

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    _limits.append(threadpool_limits(n))
    ssm.set_fft_workers(n)
    return n
