"""AdamW, the cosine warm-up schedule and global-norm gradient clipping, as pure functions.

Parameters, gradients and optimizer state are plain dicts of real numpy arrays keyed by parameter
name, so a state can be written to HDF5 as it is:

    state = adamw_init(params)                     # {"step": 0, "m": {name: 0}, "v": {name: 0}}
    params, state = adamw_step(params, grads, state, lr=1e-3, weight_decay=0.01)

Parameter groups: `lr` and `weight_decay` are each either one float for every parameter or a dict
giving a value for every parameter name. The SSM group of the seed models (reference A3.4), for
example, is `lr = {k: 1e-3 if k in ssm else base for k in params}` and
`weight_decay = {k: 0.0 if k in ssm else wd for k in params}`. A schedule scales each group alike:
`lr = {k: base_lr[k] * cosine_schedule(step, T, W, 1.0) for k in params}`.

The arrays may live on a GPU (CuPy arrays, backend "cupy"): every step runs on the arrays' own device
(`backend.array_module`); only the global norm of `clip_grad_norm` comes to the host, as one Python float.
"""

import math

import numpy as np

from refssm import backend
from refssm._checks import as_array, in_range, positive_int


def _per_param(name, value, names, lo=0.0):
    """A float or a {param: float} dict covering `names` -> {param: float >= lo}."""
    if isinstance(value, dict):
        missing, extra = set(names) - set(value), set(value) - set(names)
        if missing or extra:
            raise ValueError(f"{name} as a dict must name every parameter exactly; "
                             f"missing {sorted(missing)}, unknown {sorted(extra)}")
        return {k: float(in_range(f"{name}[{k!r}]", value[k], lo)) for k in names}
    v = float(in_range(name, value, lo))
    return dict.fromkeys(names, v)


def _real_arrays(name, d):
    """`d` checked to be a dict of finite real arrays; -> {name: array}, float32 and float64 kept as they
    are (training runs in either), anything else as float64."""
    if not isinstance(d, dict):
        raise ValueError(f"{name} must be a dict of arrays keyed by parameter name, got {type(d).__name__}")
    for k, v in d.items():
        if backend.array_module(v).iscomplexobj(v):
            raise ValueError(f"{name}[{k!r}] must be real (store Re and Im as separate parameters)")
    return {k: as_array(f"{name}[{k!r}]", v, dtype=_float_dtype(v)) for k, v in d.items()}


def _float_dtype(v):
    dtype = v.dtype if hasattr(v, "dtype") else np.asarray(v).dtype
    return dtype if dtype in (np.float32, np.float64) else np.float64


def _match_shape(name, a, shape):
    """Raise unless array `a` has the parameter's `shape`; return `a`."""
    if a.shape != shape:
        raise ValueError(f"{name} must have the parameter's shape {shape}, got {a.shape}")
    return a


def adamw_init(params):
    """Zero AdamW state: {"step": 0, "m": {name: zeros like p}, "v": {name: zeros like p}}."""
    params = _real_arrays("params", params)
    return {"step": 0,
            "m": {k: backend.array_module(p).zeros_like(p) for k, p in params.items()},
            "v": {k: backend.array_module(p).zeros_like(p) for k, p in params.items()}}


def adamw_step(params, grads, state, *, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8):
    """One AdamW step (Loshchilov & Hutter, decoupled weight decay), for every parameter p with gradient g:

        t = step + 1
        m = b1 m + (1 - b1) g              v = b2 v + (1 - b2) g^2
        m_hat = m / (1 - b1^t)             v_hat = v / (1 - b2^t)
        p <- p - lr wd p - lr m_hat / (sqrt(v_hat) + eps)

    lr, weight_decay: a float, or a dict with a value for every parameter name (see the module doc).
    Pure: returns (new params, new state) and modifies nothing it was given.
    """
    params, grads = _real_arrays("params", params), _real_arrays("grads", grads)
    if set(grads) != set(params):
        raise ValueError(f"grads must have the keys of params; missing {sorted(set(params) - set(grads))}, "
                         f"unknown {sorted(set(grads) - set(params))}")
    if not isinstance(state, dict) or set(state) != {"step", "m", "v"}:
        raise ValueError("state must be a dict with keys 'step', 'm', 'v', as adamw_init returns")
    ms, vs = _real_arrays("state['m']", state["m"]), _real_arrays("state['v']", state["v"])
    if set(ms) != set(params) or set(vs) != set(params):
        raise ValueError("state['m'] and state['v'] must have the keys of params")
    lr, wd = _per_param("lr", lr, params), _per_param("weight_decay", weight_decay, params)
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    b1 = float(in_range("betas[0]", betas[0], 0.0, 1.0, hi_open=True))
    b2 = float(in_range("betas[1]", betas[1], 0.0, 1.0, hi_open=True))
    eps = float(in_range("eps", eps, 0.0, lo_open=True))
    t = positive_int("state['step']", state["step"], minimum=0) + 1

    new_params, m_new, v_new = {}, {}, {}
    xp = backend.array_module(*params.values())
    for k, p in params.items():
        g = _match_shape(f"grads[{k!r}]", grads[k], p.shape)
        m = b1 * _match_shape(f"state['m'][{k!r}]", ms[k], p.shape) + (1.0 - b1) * g
        v = b2 * _match_shape(f"state['v'][{k!r}]", vs[k], p.shape) + (1.0 - b2) * g * g
        m_hat, v_hat = m / (1.0 - b1 ** t), v / (1.0 - b2 ** t)
        new_params[k] = p - lr[k] * wd[k] * p - lr[k] * m_hat / (xp.sqrt(v_hat) + eps)
        m_new[k], v_new[k] = m, v
    return new_params, {"step": t, "m": m_new, "v": v_new}


def cosine_schedule(step, total_steps, warmup_steps, base_lr, min_lr=0.0):
    """Learning rate at `step`: linear warm-up from 0, then cosine decay to `min_lr`.

        step <  W:  base_lr * step / W
        step >= W:  min_lr + (base_lr - min_lr) * (1 + cos(pi * q)) / 2,  q = min(1, (step - W) / (T - W))

    So lr(0) = 0 when W > 0, lr(W) = base_lr, lr(T) = min_lr, and min_lr after T.
    """
    T = positive_int("total_steps", total_steps)
    W = positive_int("warmup_steps", warmup_steps, minimum=0)
    if W > T:
        raise ValueError(f"warmup_steps must lie in [0, total_steps] = [0, {T}], got {W}")
    step = positive_int("step", step, minimum=0)
    base_lr = float(in_range("base_lr", base_lr, 0.0))
    min_lr = float(in_range("min_lr", min_lr, 0.0, base_lr))
    if step < W:
        return base_lr * step / W
    q = 1.0 if T == W else min(1.0, (step - W) / (T - W))
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * q))


def clip_grad_norm(grads, max_norm):
    """Scale all gradients by min(1, max_norm / ||g||), ||g|| the global L2 norm over every array.

    -> (clipped grads (new dict), ||g|| before clipping). After clipping the global norm is exactly
    min(||g||, max_norm).
    """
    grads = _real_arrays("grads", grads)
    max_norm = float(in_range("max_norm", max_norm, 0.0, lo_open=True))
    if grads:                                                  # one device -> host copy of the per-array sums
        xp = backend.array_module(*grads.values())
        squares = xp.stack([(g * g).sum() for g in grads.values()]).astype(np.float64)   # exact: float32 fits
        total = math.sqrt(sum(squares.tolist()))
    else:
        total = 0.0
    scale = max_norm / total if total > max_norm else 1.0
    return {k: g * scale for k, g in grads.items()}, total
