"""refssm: a torch-free reference implementation of spiking state-space models.

Layers (each checked against the one below it):
  oracles    refssm.ssm, refssm.neurons, refssm.surrogate, refssm.fractional   (numpy, float64)
  fast paths refssm.kernels                                                     (Numba, CPU)
  training   refssm.ops, refssm.spiking, refssm.tape, refssm.models, refssm.train   (hand-written VJPs)
refssm.backend is the one door between them: which implementation of each operation runs.
Conventions: activations are (B, H, L), time last; spikes fire at equality, s = 1[v >= theta].
"""

__version__ = "0.2.0"
