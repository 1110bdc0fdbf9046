"""Every test runs offline: its dataset cache in tmp_path and network connections refused.

The CUDA kernels (refssm.kernels.cuda) run in Numba's CUDA simulator, on the CPU, unless the environment
says otherwise: on a GPU machine run `NUMBA_ENABLE_CUDASIM=0 pytest tests/test_gpu.py` (README, "GPU").
"""

import os
import socket

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")      # read when numba.cuda is first imported

import pytest


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")
    monkeypatch.setenv("REFSSM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


from fake_cupy import fake_cupy  # noqa: E402,F401  (the CuPy test double's fixture, for every test module)
