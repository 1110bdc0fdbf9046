"""refssm: a torch-free reference implementation of spiking state-space models.

Layers (each checked against the one below it):
  oracles    refssm.ssm, refssm.neurons, refssm.surrogate, refssm.fractional   (numpy, float64)
  fast paths refssm.kernels                                                     (Numba, CPU)
  training   refssm.ops, refssm.spiking, refssm.tape, refssm.models, refssm.train   (hand-written VJPs)
refssm.backend is the one door between them: which implementation of each operation runs.
Conventions: activations are (B, H, L), time last; spikes fire at equality, s = 1[v >= theta].
"""

__version__ = "0.2.0"

# A source checkout keeps kernels/ and datasets/ beside this folder (pyproject.toml maps them into the
# installed package as refssm.kernels and refssm.datasets): `python` started in the clone root imports this
# folder rather than the installed package, so look for them there too.
import os as _os

_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "kernels")) and \
        _os.path.isfile(_os.path.join(_root, "kernels", "__init__.py")):
    __path__.append(_root)
