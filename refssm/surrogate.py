"""Surrogate gradients: Heaviside forward, smooth derivative backward.

A spike is s = H(z) with z = v - theta. Its true derivative is a Dirac delta, so training replaces
dH/dz by the derivative sigma'(z) of a smooth primitive sigma ("surrogate"). Each surrogate below is
written as that primitive and its derivative, so the derivative can be checked numerically.

    name             sigma'(z)                                    primitive sigma(z)          matches
    triangle         max(0, 1 - |z|/w) / w            (w = 1)     piecewise quadratic          SpikingSSM (A4), Bellec 2018
    fast_sigmoid     1 / (k|z| + 1)^2                 (k = 25)    z / (1 + k|z|)               snnTorch fast_sigmoid, Binary S4D
    sigmoid          a s(az) (1 - s(az))              (a = 4)     s(az), s = logistic          SpikingJelly Sigmoid (snnTorch uses 25)
    atan             (a/2) / (1 + (pi a z / 2)^2)     (a = 2)     atan(pi a z / 2)/pi + 1/2    SpikingJelly and snnTorch ATan
    rectangle        1[|z| < w/2] / w                 (w = 1)     clip(z/w + 1/2, 0, 1)        SpikingJelly Rect with alpha = 1/w
    straight_through 1[0 <= z <= 1]                               clip(z, 0, 1)                P-SpikeSSM sampler (z = firing prob.)

Library differences that matter for parity (reference notes, ecosystem 1.5): snnTorch's fast_sigmoid
has no slope prefactor (integral 2/k, not 1) while SpikingJelly's SoftSign is a/(2(1+a|z|)^2);
SpikingJelly's Sigmoid defaults to a = 4, snnTorch's to 25; Norse's SuperSpike is 1/(a|z|+1)^2 while
SpikingJelly's is a/(|z|+1)^2. The straight-through clamp is the gradient of E[s] = clip(p, 0, 1) for
the stochastic sampler s = 1[U < p]; its forward is that sampler (refssm.neurons.stochastic), not H.

Heaviside convention: H(0) = 1 ("fire at equality", SpikingJelly, Lava) by default; snnTorch, Norse
and Binary S4D use H(0) = 0 (fire_at_equality=False).

Every function here is generic: one formula for numpy and CuPy arrays (`xp`, the array module of z).
"""

from dataclasses import dataclass, field

import numpy as np

from refssm import backend
from refssm._checks import as_array, choice, in_range


def heaviside(z, fire_at_equality=True):
    """H(z) = 1[z >= 0] (fire_at_equality) or 1[z > 0], as float64 of z's shape."""
    z = as_array("z", z)
    return (z >= 0 if fire_at_equality else z > 0).astype(z.dtype)


def _triangle(z, width):
    xp = backend.array_module(z)
    return xp.maximum(0.0, 1.0 - xp.abs(z) / width) / width


def _triangle_primitive(z, width):
    xp = backend.array_module(z)
    x = xp.clip(z / width, -1.0, 1.0)
    return xp.where(x < 0, (x + 1) ** 2 / 2, 1 - (1 - x) ** 2 / 2)


def _fast_sigmoid(z, slope):
    return 1.0 / (slope * backend.array_module(z).abs(z) + 1.0) ** 2


def _fast_sigmoid_primitive(z, slope):
    return z / (1.0 + slope * backend.array_module(z).abs(z))


def _logistic(x):
    return 0.5 * (1.0 + backend.array_module(x).tanh(x / 2))                  # overflow-free


def _sigmoid(z, alpha):
    s = _logistic(alpha * z)
    return alpha * s * (1 - s)


def _sigmoid_primitive(z, alpha):
    return _logistic(alpha * z)


def _atan(z, alpha):
    return (alpha / 2) / (1 + (np.pi * alpha * z / 2) ** 2)


def _atan_primitive(z, alpha):
    return backend.array_module(z).arctan(np.pi * alpha * z / 2) / np.pi + 0.5


def _rectangle(z, width):
    return (backend.array_module(z).abs(z) < width / 2) / width


def _rectangle_primitive(z, width):
    return backend.array_module(z).clip(z / width + 0.5, 0.0, 1.0)


def _straight_through(z):
    return ((z >= 0) & (z <= 1)).astype(z.dtype)


def _straight_through_primitive(z):
    return backend.array_module(z).clip(z, 0.0, 1.0)


# name -> (derivative, primitive, {parameter: default}); every parameter must be > 0
SURROGATES = {
    "triangle": (_triangle, _triangle_primitive, {"width": 1.0}),
    "fast_sigmoid": (_fast_sigmoid, _fast_sigmoid_primitive, {"slope": 25.0}),
    "sigmoid": (_sigmoid, _sigmoid_primitive, {"alpha": 4.0}),
    "atan": (_atan, _atan_primitive, {"alpha": 2.0}),
    "rectangle": (_rectangle, _rectangle_primitive, {"width": 1.0}),
    "straight_through": (_straight_through, _straight_through_primitive, {}),
}


@dataclass(frozen=True)
class Surrogate:
    """A spike function: `forward(z)` is the Heaviside step, `grad(z)` the surrogate derivative,
    `primitive(z)` the smooth function whose derivative `grad` is."""

    name: str
    params: dict = field(default_factory=dict)
    fire_at_equality: bool = True

    def forward(self, z):
        return heaviside(z, self.fire_at_equality)

    def grad(self, z):
        return SURROGATES[self.name][0](as_array("z", z), **self.params)

    def primitive(self, z):
        return SURROGATES[self.name][1](as_array("z", z), **self.params)


def get(name, fire_at_equality=True, **params):
    """The surrogate `name` (see the module table) with its parameters, e.g. get("fast_sigmoid", slope=25)."""
    choice("name", name, tuple(SURROGATES))
    defaults = SURROGATES[name][2]
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"surrogate {name!r} takes parameters {sorted(defaults) or 'none'}; "
                         f"got unknown {sorted(unknown)}")
    values = {k: float(in_range(k, params.get(k, v), 0, None, lo_open=True)) for k, v in defaults.items()}
    return Surrogate(name, values, bool(fire_at_equality))

