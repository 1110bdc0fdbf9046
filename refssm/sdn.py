"""The Surrogate Dynamic Network (SDN) of SpikingSSM (Shen et al., AAAI 2025; reference notes A2).

A LIF neuron with fixed tau is a deterministic causal map from its input current y to its spikes. The
SDN is a tiny causal CNN, trained offline, that predicts the leaked after-reset membrane potential

    m_t = tau u_{t-1}          (u = after-reset potential of the hard-reset LIF, v_th = 1, u_{-1} = 0)

from the past inputs y_{t-8..t-1}; the task network then fires in parallel over time (A2.1):

    z_t = m_hat_t + y_t - 1,   s_t = H(z_t),   ds_t/dy_t := g(z_t)   (m_hat detached, g the surrogate)

Deployed ("fused") form, 153 parameters (A2.2), y (..., L) -> m_hat (..., L), time last:

    x_{j,t} = y_{t-8+j}  (j = 0..7, zero for t-8+j < 0)      tap j = 7 sees y_{t-1}, tap 0 sees y_{t-8}
    h   = ReLU(W1 x + b1)           W1 (8 channels, 8 taps), b1 (8,)       conv1, strictly causal
    h2  = ReLU(W2 h + b2 + h)       W2 (8, 8), b2 (8,)                     1x1 conv with identity residual
    m   = w3 . h2 + b3              w3 (8,), b3 ()                         1x1 conv 8 -> 1

Mapping to the public PyTorch module: conv1.weight[c, 0, j] = W1[c, j] (cross-correlation with 8 zeros
padded on each side, truncated to the first L outputs), conv2.weight[:, :, 0] = W2,
conv3.weight[0, :, 0] = w3, conv3.bias[0] = b3.

Training (A2.3, with documented deviations): i.i.d. N(0, 1) currents, target m_t = tau u_{t-1} from the
exact oracle `refssm.neurons.lif`, SmoothL1 (Huber, beta = 1) loss, AdamW with a cosine schedule.
Deviation: the paper trains a form with BatchNorm and a separate 1 -> 8 encoder (193 parameters) and
then folds encoder and BN into the convolutions; here the fused form is trained directly. At inference
the two parameterise the same function class (every BN form folds to a fused form, and every fused
form is a BN form with identity statistics), so the shipped weights have the deployed shape. The data
set and the number of epochs are much smaller than the paper's (see `validation/train_sdn.py`).

Weights are ours, trained by `validation/train_sdn.py` from a seed; `load(tau)` reads the shipped
`sdn_tau<tau>.npz` (np.savez, loaded with allow_pickle=False). v_th is fixed at 1: the learnable
threshold of SpikingSSM is an input scaling y / v_th applied by the caller (reference notes A1).
"""

import zipfile
from pathlib import Path

import numpy as np

from refssm import backend, neurons, surrogate
from refssm._checks import as_array, in_range, positive_int, time_series
from refssm._io import write_npz_atomic
from refssm.optim import adamw_init, adamw_step, cosine_schedule

K = 8                                                     # receptive field: taps y_{t-8} .. y_{t-1}
C = 8                                                     # hidden channels
SHAPES = {"W1": (C, K), "b1": (C,), "W2": (C, C), "b2": (C,), "w3": (C,), "b3": ()}
N_PARAMS = sum(int(np.prod(s)) for s in SHAPES.values())  # 153
SHIPPED = {0.125: "sdn_tau0.125.npz"}                      # tau -> file next to this module


# --------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------

def check_params(params, name="params"):
    """`params` checked to hold exactly the six arrays of SHAPES, finite; -> {key: float64 array}."""
    if not hasattr(params, "keys"):
        raise ValueError(f"{name} must be a dict with keys {sorted(SHAPES)}, got {type(params).__name__}")
    keys = set(params.keys())
    if keys != set(SHAPES):
        raise ValueError(f"{name} must have exactly the keys {sorted(SHAPES)}; missing "
                         f"{sorted(set(SHAPES) - keys)}, unknown {sorted(keys - set(SHAPES))}")
    out = {}
    for k, shape in SHAPES.items():
        a = as_array(f"{name}[{k!r}]", params[k])
        if a.shape != shape:
            raise ValueError(f"{name}[{k!r}] must have shape {shape}, got {a.shape}")
        out[k] = a
    return out


def init_params(rng):
    """Random fused-form parameters, PyTorch's default conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for every weight and bias (fan_in = 8 for all three layers)."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    bound = 1.0 / np.sqrt(8.0)
    return {k: rng.uniform(-bound, bound, size=s) for k, s in SHAPES.items()}


def load(tau=0.125):
    """The shipped SDN weights for `tau` (only tau = 0.125 is shipped), as a dict of float64 arrays."""
    t = float(in_range("tau", tau, 0, 1, hi_open=True))
    match = [f for k, f in SHIPPED.items() if abs(k - t) <= 1e-12]
    if not match:
        raise ValueError(f"no shipped SDN weights for tau = {t!r}; shipped: tau in "
                         f"{sorted(SHIPPED)} (train others with refssm.sdn.train)")
    path = Path(__file__).with_name(match[0])
    if not path.is_file():
        raise FileNotFoundError(f"shipped SDN weights {path} are missing: the package was installed "
                                f"without its data files (reproduce them with validation/train_sdn.py)")
    return read(path)


def read(path):
    """SDN weights from an .npz written by `save` (never unpickled); a corrupt or foreign file
    raises ValueError."""
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with f:
            params = {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read SDN weights {path}: {e}") from None
    return check_params(params, name=str(path))


def save(path, params):
    """Write params with np.savez (no pickle) atomically: temp file, then rename."""
    write_npz_atomic(path, check_params(params))


# --------------------------------------------------------------------------------------------------
# Forward and VJP
# --------------------------------------------------------------------------------------------------

def _check_y(y):
    """y (..., L), L >= 1, kept in float32 if it is a float32 array, else float64."""
    return time_series("y", y, np.float32 if getattr(y, "dtype", None) == np.float32 else np.float64)


def _lags(y):
    """x[..., j, t] = y[..., t - 8 + j], zero before the start: (..., L) -> (..., 8, L)."""
    L = y.shape[-1]
    xp = backend.array_module(y)
    ypad = xp.concatenate([xp.zeros_like(y, shape=y.shape[:-1] + (K,)), y], axis=-1)   # ypad[s+8] = y[s]
    idx = xp.arange(K)[:, None] + xp.arange(L)[None, :]                      # (8, L): ypad index t + j
    return ypad[..., idx]                                                    # (..., 8, L)


def _unlags(gx):
    """Adjoint of _lags: gy[..., s] = sum_j gx[..., j, s + 8 - j] over valid t = s + 8 - j < L."""
    L = gx.shape[-1]
    gpad = backend.array_module(gx).zeros_like(gx, shape=gx.shape[:-2] + (K + L,))
    for j in range(K):                                                       # 8 taps
        gpad[..., j:j + L] += gx[..., j, :]
    return gpad[..., K:]


def forward(y, params):
    """m_hat = SDN(y): y (..., L) -> (..., L), the predicted tau u_{t-1}; see the module doc.

    Returns (m_hat, ctx); ctx holds what `forward_vjp` needs. Computed in y's dtype: float32 y (the
    parameters cast to float32) gives float32 m_hat; anything else float64. Generic: a CuPy y runs on its
    device, with the (host) parameters copied there.
    """
    y = _check_y(y)
    xp = backend.array_module(y)
    p = {k: xp.asarray(v).astype(y.dtype, copy=False) for k, v in check_params(params).items()}
    x = _lags(y)                                             # (..., 8, L)   x[j, t] = y[t-8+j]
    a1 = p["W1"] @ x + p["b1"][:, None]                      # (..., 8, L)   conv1: sum_j W1[c, j] x[j, t]
    h = xp.maximum(a1, 0.0)                                  # (..., 8, L)
    a2 = p["W2"] @ h + p["b2"][:, None] + h                  # (..., 8, L)   1x1 conv + residual
    h2 = xp.maximum(a2, 0.0)                                 # (..., 8, L)
    m = p["w3"] @ h2 + p["b3"]                               # (..., L)      1x1 conv 8 -> 1
    return m, (p, x, a1, h, a2, h2)


def forward_vjp(ctx, gm):
    """gm = dL/dm_hat (..., L) -> (gy, grads): gy = dL/dy (..., L) and grads a dict like params (input
    gradient first, like every VJP in refssm)."""
    p, x, a1, h, a2, h2 = ctx
    gm = as_array("gm", gm).astype(h2.dtype, copy=False)
    out_shape = h2.shape[:-2] + h2.shape[-1:]
    if gm.shape != out_shape:
        raise ValueError(f"gm must have the output's shape {out_shape}, got {gm.shape}")
    L = out_shape[-1]
    x, a1, h, a2, h2 = (a.reshape(-1, C, L) for a in (x, a1, h, a2, h2))   # (N, 8, L), N = batch
    gm = gm.reshape(-1, L)                                   # (N, L)
    g = {"b3": backend.array_module(gm).asarray(gm.sum()),  # ()
         "w3": (h2 @ gm[:, :, None]).sum(axis=(0, 2))}       # (8,)        sum_{n,t} gm h2[c]
    ga2 = p["w3"][:, None] * gm[:, None, :] * (a2 > 0)       # (N, 8, L)   dL/da2
    g["W2"] = (ga2 @ h.transpose(0, 2, 1)).sum(axis=0)       # (8, 8)      sum_{n,t} ga2[d] h[c]
    g["b2"] = ga2.sum(axis=(0, 2))                           # (8,)
    gh = ga2 + p["W2"].T @ ga2                               # (N, 8, L)   through W2 h and the residual
    ga1 = gh * (a1 > 0)                                      # (N, 8, L)   dL/da1
    g["W1"] = (ga1 @ x.transpose(0, 2, 1)).sum(axis=0)       # (8, 8)      sum_{n,t} ga1[c] x[j]
    g["b1"] = ga1.sum(axis=(0, 2))                           # (8,)
    gy = _unlags(p["W1"].T @ ga1)                            # (N, L)      adjoint of the lag matrix
    return gy.reshape(out_shape), {k: g[k] for k in SHAPES}


def predict(y, params):
    """m_hat = SDN(y) without the context: (..., L) -> (..., L)."""
    return forward(y, params)[0]


# --------------------------------------------------------------------------------------------------
# The neuron the models call
# --------------------------------------------------------------------------------------------------

def sdn_spikes(y, params, fire_at_equality=True):
    """Parallel LIF spikes via the SDN (v_th = 1): y (..., L) -> (s, z), both (..., L).

    z = m_hat + y - 1 with m_hat = SDN(y) treated as a constant; s = H(z). The caller applies the
    surrogate at z: ds/dy = g(z), the only gradient path (reference notes A2.1, A4; refssm.spiking.sdn_lif
    is the differentiable operation). s and z keep y's dtype (float32 stays float32).
    """
    y = _check_y(y)
    z = predict(y, params)
    z += y
    z -= 1.0
    return surrogate.heaviside(z, fire_at_equality).astype(z.dtype, copy=False), z


# --------------------------------------------------------------------------------------------------
# Training data, loss, metrics
# --------------------------------------------------------------------------------------------------

def lif_target(y, tau):
    """Exact targets from the hard-reset LIF oracle (v_th = 1, u_r = 0): y (..., L) ->
    (m, s): m_t = tau u_{t-1} (u after reset, u_{-1} = 0) and the exact spikes s_t."""
    y = _check_y(y)
    s, v = neurons.lif(y, tau, v_th=1.0, reset="hard", v_reset=0.0)
    u = v * (1.0 - s)                                                        # after-reset potential
    m = np.zeros_like(y)
    m[..., 1:] = tau * u[..., :-1]
    return m, s


def make_data(n, L, tau, rng):
    """n i.i.d. N(0, 1) sequences of length L and their targets: -> (y, m, s), each (n, L)."""
    n, L = positive_int("n", n), positive_int("L", L)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    y = rng.standard_normal((n, L))
    m, s = lif_target(y, tau)
    return y, m, s


def smooth_l1(pred, target, beta=1.0):
    """Mean Huber loss (PyTorch SmoothL1Loss): 0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta.
    Returns (loss, dloss/dpred)."""
    d = pred - target
    small = np.abs(d) < beta
    loss = np.where(small, 0.5 * d * d / beta, np.abs(d) - 0.5 * beta).mean()
    return float(loss), np.where(small, d / beta, np.sign(d)) / d.size


def loss_and_grads(params, y, target):
    """SmoothL1(SDN(y), target) and its gradient w.r.t. every parameter: -> (loss, grads)."""
    m, ctx = forward(y, params)
    loss, gm = smooth_l1(m, as_array("target", target))
    return loss, forward_vjp(ctx, gm)[1]


def spike_accuracy(params, tau, y):
    """Mean of (H(m_hat + y - 1) == s_exact) over all positions, s_exact from the exact hard-reset LIF."""
    _, s = lif_target(y, tau)
    return float(np.mean(sdn_spikes(y, params)[0] == s))


def mem_mae(params, tau, y):
    """Mean |m_hat - tau u_{t-1}| against the exact LIF."""
    m, _ = lif_target(y, tau)
    return float(np.mean(np.abs(predict(y, params) - m)))


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------

def train(tau=0.125, n_train=16384, L=256, epochs=50, batch=16, lr=1e-2, seed=0, *, weight_decay=0.01,
          warmup=0, params0=None, history=None, log=None):
    """Train the fused SDN on the exact LIF (A2.3 recipe, reduced size): -> params.

    The defaults are the recipe of the shipped weights (about a minute on one CPU core): 16384
    sequences of length 256 (4.2M time steps; the paper: 9e4 x 1024), 50 epochs (paper 100), batch 16
    (paper 64), lr 0.01, weight decay 0.01 (as the paper's code). The receptive field is 8 steps, so
    short sequences lose nothing; small batches buy many optimizer steps (51,200), which is what the
    fused form needs to sharpen the reset discontinuity.

    Data: n_train i.i.d. N(0, 1) sequences of length L with targets m_t = tau u_{t-1}, drawn from
    default_rng(seed), which also draws the initial params (unless params0 is given) and the
    shuffling. Loss SmoothL1 (beta = 1); AdamW(lr, weight_decay) with a cosine schedule over all
    steps (warm-up `warmup` steps). If `history` is a list, one dict per epoch (epoch, train loss,
    lr) is appended; `log`, if given, is called with each such dict.
    """
    tau = float(in_range("tau", tau, 0, 1, hi_open=True))
    n_train, L = positive_int("n_train", n_train), positive_int("L", L)
    epochs, batch = positive_int("epochs", epochs), positive_int("batch", batch)
    lr = float(in_range("lr", lr, 0, None, lo_open=True))
    rng = np.random.default_rng(seed)
    y, m, _ = make_data(n_train, L, tau, rng)
    params = init_params(rng) if params0 is None else check_params(params0, "params0")
    state = adamw_init(params)
    per_epoch = -(-n_train // batch)
    total = epochs * per_epoch
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(n_train)
        losses = []
        for i in range(per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            loss, grads = loss_and_grads(params, y[idx], m[idx])
            rate = cosine_schedule(step, total, warmup, lr)
            params, state = adamw_step(params, grads, state, lr=rate, weight_decay=weight_decay)
            losses.append(loss)
            step += 1
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": rate}
        if history is not None:
            history.append(record)
        if log is not None:
            log(record)
    return params
