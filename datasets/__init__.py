"""Offline data: bundled sources, generators and real-format loaders (`refssm.datasets`)."""
