"""Fast paths (Numba on CPU, CuPy on GPU); each function names the oracle it must match."""
