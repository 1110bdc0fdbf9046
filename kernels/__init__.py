"""Fast paths (Numba, CPU), each registered in refssm.backend against the oracle it must match."""

import math

import numpy as np


def rows(*arrays):
    """Arrays (..., n) as C-contiguous rows (R, n), R the product of the leading dims (also for n = 0).

    Contiguous arrays give views, so the compiled loops write their outputs through them. Outputs are
    allocated by numpy rather than inside the loops: numpy asks for huge pages (fewer page faults)
    and tracemalloc sees its allocations."""
    return [np.ascontiguousarray(a.reshape(math.prod(a.shape[:-1]), a.shape[-1])) for a in arrays]
