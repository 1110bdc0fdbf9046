"""Every test runs offline: its dataset cache in tmp_path and network connections refused."""

import socket

import pytest


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")
    monkeypatch.setenv("REFSSM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
