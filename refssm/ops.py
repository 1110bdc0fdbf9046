"""Dense differentiable operations of the hand-written reverse mode, each forward beside its VJP.

Every op is a pair of pure functions, in the style of HIPS autograd's primitives:

    y, ctx = op(x, ...)        # forward: the output and a context tuple holding what the VJP needs
    gx = op_vjp(ctx, gy)       # vector-Jacobian product: gy = dL/dy  ->  dL/dx

A VJP with one differentiable input returns that gradient; with several it returns a tuple in the
order of the forward's differentiable arguments. Integer, boolean and random inputs (labels,
tokens, masks, rng) and running statistics are not differentiated.

Activations are (B, H, L): batch, channels, time last. Ops that act per channel also accept
(B, H) (pooled features); the channel axis is always axis 1. Arrays keep their dtype (float64 for
the oracles' users, float32 or float64 in training): nothing here promotes float32 to float64.

Every op is generic: one formula for numpy and CuPy arrays, written against the array module of its inputs
(`xp = backend.array_module(x)`; scipy.special through `backend.special_module(xp)`), with what both modules
have (no np.put_along_axis, which CuPy 13 lacks; xp.add.at, which both have, for scatter-adds). Integer and
boolean inputs (tokens, labels, masks, indices) and the uniforms of dropout may be host arrays with device
activations: they are moved to the activations' device (`xp.asarray`, a no-op for numpy).
"""

import math

import numpy as np

from refssm import backend
from refssm._checks import as_array, choice, in_range

_SQRT2 = math.sqrt(2.0)          # python floats: they keep float32 arrays float32 (NEP 50)
_SQRT2PI = math.sqrt(2.0 * math.pi)


def _match(name, a, shape):
    """Raise unless array `a` has exactly `shape`; return `a`."""
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")
    return a


def _vector(name, v, n):
    """A parameter vector of length n, e.g. per-channel gamma (H,)."""
    return _match(name, as_array(name, v, ndim=1), (n,))


def _cotangent(gy, shape):
    """The upstream gradient dL/dy as a finite float64 array of the forward output's shape."""
    return _match("gy", as_array("gy", gy), shape)


def _per_channel(v, ndim):
    """Broadcast a per-channel vector (H,) against an activation of `ndim` dims: (1, H, 1, ...)."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _batch_axes(ndim):
    """Every axis except the channel axis 1: (0, 2, ...)."""
    return (0,) + tuple(range(2, ndim))


# ---------------------------------------------------------------------------------------------
# Linear maps


def linear(x, W, b):
    """Linear map on the channel axis (a 1x1 convolution): y[b,o,l] = sum_i W[o,i] x[b,i,l] + b[o].

    x (B, H_in, L) or (B, H_in); W (H_out, H_in); b (H_out,)  ->  y (B, H_out, L) or (B, H_out).
    (B, H, L) inputs run as ONE matrix product on channel-major rows, W (H_out, H_in) @ X (H_in, B L):
    a batch of B small products (one per example) spends more on thread start-up than on arithmetic.
    ctx = (X, W, x.shape): the channel-major copy of x, which the VJP's weight gradient reuses.
    """
    x = as_array("x", x, min_ndim=2)
    W = as_array("W", W, ndim=2)
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"x.shape[1] must equal W.shape[1] = {W.shape[1]}, got x of shape {x.shape}")
    b = _vector("b", b, W.shape[0])
    if x.ndim == 2:
        return x @ W.T + b, (x, W, x.shape)                         # (B, H_out)
    B, H, L = x.shape
    X = backend.array_module(x).ascontiguousarray(x.transpose(1, 0, 2)).reshape(H, B * L)   # (H_in, B L)
    Y = W @ X                                                       # (H_out, B L)
    Y += b[:, None]
    return Y.reshape(-1, B, L).transpose(1, 0, 2), (X, W, x.shape)  # (B, H_out, L), a view


def linear_vjp(ctx, gy):
    """-> (gx, gW, gb): gx = W^T gy, gW[o,i] = sum_{b,l} gy[b,o,l] x[b,i,l], gb[o] = sum_{b,l} gy[b,o,l]."""
    X, W, shape = ctx
    gy = _cotangent(gy, (shape[0], W.shape[0]) + shape[2:])
    if len(shape) == 2:
        return gy @ W, gy.T @ X, gy.sum(axis=0)
    B, _, L = shape
    G = backend.array_module(gy).ascontiguousarray(gy.transpose(1, 0, 2)).reshape(-1, B * L)   # (H_out, B L)
    gx = (W.T @ G).reshape(-1, B, L).transpose(1, 0, 2)             # (B, H_in, L), a view
    return gx, G @ X.T, G.sum(axis=1)


def channel_affine(x, alpha, beta):
    """Per-channel scale and shift: y[b,h,l] = alpha[h] x[b,h,l] + beta[h].

    x (B, H, L) or (B, H); alpha, beta (H,)  ->  y like x. ctx = (x, alpha).
    (The affine of the norms, and P-SpikeSSM's learnable input/output affines.)
    """
    x = as_array("x", x, min_ndim=2)
    alpha, beta = _vector("alpha", alpha, x.shape[1]), _vector("beta", beta, x.shape[1])
    return _per_channel(alpha, x.ndim) * x + _per_channel(beta, x.ndim), (x, alpha)


def channel_affine_vjp(ctx, gy):
    """-> (gx, galpha, gbeta): gx = alpha gy, galpha[h] = sum gy x, gbeta[h] = sum gy (over b, l)."""
    x, alpha = ctx
    gy = _cotangent(gy, x.shape)
    axes = _batch_axes(x.ndim)
    return _per_channel(alpha, x.ndim) * gy, (gy * x).sum(axis=axes), gy.sum(axis=axes)


def threshold_scale(y, ln_vth):
    """A learnable per-channel threshold as an input scaling: x[b,h,l] = y[b,h,l] exp(-ln_vth[h]).

    A neuron with threshold 1 driven by x fires as one with threshold exp(ln_vth) driven by y
    (SpikingSSM Property 2, f(I; v_th) = f(I / v_th; 1), exact for a reset to 0).
    y (B, H, L); ln_vth (H,)  ->  x like y. ctx = (x, exp(-ln_vth)).
    """
    y = as_array("y", y, min_ndim=2)
    scale = backend.array_module(y).exp(-_vector("ln_vth", ln_vth, y.shape[1]))
    x = y * _per_channel(scale, y.ndim)
    return x, (x, scale)


def threshold_scale_vjp(ctx, gx):
    """-> (gy, gln_vth): gy = gx exp(-ln_vth), gln_vth[h] = -sum_{b,l} gx x."""
    x, scale = ctx
    gx = _cotangent(gx, x.shape)
    axes = _batch_axes(x.ndim)
    xp = backend.array_module(gx)
    return gx * _per_channel(scale, x.ndim), -xp.einsum("bhl,bhl->h", gx, x) if x.ndim == 3 else -(gx * x).sum(axis=axes)


def skip(y, u, D):
    """The feed-through of an SSM layer: out = y + D[h] u  (y = K * u, the convolution).

    y, u (B, H, L); D (H,)  ->  out like y. ctx = (u, D).
    """
    y = as_array("y", y, min_ndim=2)
    u = _match("u", as_array("u", u, min_ndim=2), y.shape)
    D = _vector("D", D, y.shape[1])
    out = D[:, None] * u if y.ndim == 3 else D * u
    out += y
    return out, (u, D)


def skip_vjp(ctx, g):
    """-> (gy, gu, gD): gy = g, gu = D g, gD[h] = sum_{b,l} g u."""
    u, D = ctx
    g = _cotangent(g, u.shape)
    gD = backend.array_module(g).einsum("bhl,bhl->h", g, u) if u.ndim == 3 else (g * u).sum(axis=0)
    return g, _per_channel(D, u.ndim) * g, gD


def add(a, b):
    """a + b (a residual connection); ctx = None."""
    return a + b, None


def add_vjp(ctx, g):
    """-> (g, g)."""
    return g, g


# ---------------------------------------------------------------------------------------------
# Pointwise nonlinearities


def glu(x, axis=1):
    """Gated linear unit: split x into halves a, b along `axis`; y = a * sigmoid(b).

    x (B, 2H, L)  ->  y (B, H, L) for axis=1. ctx = (a, sigmoid(b), axis).
    """
    x = as_array("x", x, min_ndim=1)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis must be an integer in [{-x.ndim}, {x.ndim - 1}], got {axis!r}")
    if x.shape[axis] % 2:
        raise ValueError(f"x.shape[axis] must be even (two halves), got {x.shape[axis]} for axis {axis}")
    xp = backend.array_module(x)
    a, b = xp.split(x, 2, axis=axis)
    s = backend.special_module(xp).expit(b)
    return a * s, (a, s, axis)


def glu_vjp(ctx, gy):
    """-> gx = concat(gy * s, gy * a * s (1 - s)) along the split axis, with s = sigmoid(b)."""
    a, s, axis = ctx
    gy = _cotangent(gy, a.shape)
    return backend.array_module(gy).concatenate([gy * s, gy * a * s * (1.0 - s)], axis=axis)


def gelu(x):
    """Exact GELU: y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)). Any shape. ctx = (x,)."""
    x = as_array("x", x)
    erf = backend.special_module(backend.array_module(x)).erf
    return 0.5 * x * (1.0 + erf(x / _SQRT2)), (x,)


def gelu_vjp(ctx, gy):
    """-> gx = gy (Phi(x) + x phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)."""
    (x,) = ctx
    gy = _cotangent(gy, x.shape)
    xp = backend.array_module(x)
    erf = backend.special_module(xp).erf
    return gy * (0.5 * (1.0 + erf(x / _SQRT2)) + x * xp.exp(-0.5 * x * x) / _SQRT2PI)


# ---------------------------------------------------------------------------------------------
# Normalisation


def _normalize(x, axes, eps):
    """xhat = (x - mean) / sqrt(var + eps), statistics over `axes` (biased variance)."""
    mu = x.mean(axis=axes, keepdims=True)
    inv_std = 1.0 / backend.array_module(x).sqrt(x.var(axis=axes, keepdims=True) + eps)
    return (x - mu) * inv_std, inv_std


def _normalize_vjp(gxhat, xhat, inv_std, axes):
    """Backward of _normalize: gx = inv_std (gxhat - mean(gxhat) - xhat mean(gxhat xhat))."""
    return inv_std * (gxhat - gxhat.mean(axis=axes, keepdims=True)
                      - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True))


def layer_norm(x, gamma, beta, eps=1e-5):
    """LayerNorm over channels, separately for every (b, l):

        xhat = (x - mean_h x) / sqrt(var_h x + eps),   y = gamma[h] xhat + beta[h]   (biased var_h)

    x (B, H, L) or (B, H); gamma, beta (H,)  ->  y like x. ctx = (xhat, 1/std, affine ctx).
    """
    x = as_array("x", x, min_ndim=2)
    gamma, beta = _vector("gamma", gamma, x.shape[1]), _vector("beta", beta, x.shape[1])
    eps = float(in_range("eps", eps, 0.0, lo_open=True))
    xhat, inv_std = _normalize(x, (1,), eps)
    y, actx = channel_affine(xhat, gamma, beta)
    return y, (xhat, inv_std, actx)


def layer_norm_vjp(ctx, gy):
    """-> (gx, ggamma, gbeta)."""
    xhat, inv_std, actx = ctx
    gxhat, ggamma, gbeta = channel_affine_vjp(actx, gy)
    return _normalize_vjp(gxhat, xhat, inv_std, (1,)), ggamma, gbeta


def batch_norm(x, gamma, beta, running_mean, running_var, train, momentum=0.1, eps=1e-5, allreduce=None):
    """BatchNorm over channels, statistics over batch and time (every axis but 1).

    train:  xhat = (x - mean) / sqrt(var + eps) with the batch's mean and biased var per channel;
            running stats become (1 - momentum) running + momentum batch_stat, where the running
            variance takes the unbiased batch variance (n / (n - 1), n = B L), as PyTorch does.
    eval:   xhat = (x - running_mean) / sqrt(running_var + eps); running stats are returned as given.
    y = gamma[h] xhat + beta[h].

    allreduce: None (the statistics of this x), or a function returning the elementwise sum over the
    processes of a data-parallel job of a float64 array (refssm.distributed.Comm.sum; the same result on
    every process): x is then one process's shard of the global batch, and train mode uses the global
    batch's statistics, as synchronised BatchNorm does, in two passes (float64 accumulation):
        n = sum_p n_p,  mean = sum_p sum(x_p) / n,  var = sum_p sum((x_p - mean)^2) / n   (biased)
    (the squared deviations from the global mean, not E[x^2] - mean^2, which cancels). The VJP then takes its
    two means over the global batch likewise. Eval mode does not communicate.

    x (B, H, L) or (B, H); gamma, beta, running_mean, running_var (H,)
    -> (y like x, ctx, new_running_mean (H,), new_running_var (H,)). Pure: inputs are not modified.
    """
    x = as_array("x", x, min_ndim=2)
    H, axes = x.shape[1], _batch_axes(x.ndim)
    gamma, beta = _vector("gamma", gamma, H), _vector("beta", beta, H)
    running_mean = _vector("running_mean", running_mean, H)
    running_var = in_range("running_var", _vector("running_var", running_var, H), 0.0)
    train = choice("train", train, (True, False))
    momentum = float(in_range("momentum", momentum, 0.0, 1.0))
    eps = float(in_range("eps", eps, 0.0, lo_open=True))
    if allreduce is not None and not callable(allreduce):
        raise ValueError(f"allreduce must be None or a function summing an array over processes, got "
                         f"{type(allreduce).__name__}")
    n = x.size // H if H else 0
    xp = backend.array_module(x)
    if train:
        if allreduce is None:
            if x.size < 2 * H:
                raise ValueError(f"x must hold at least 2 values per channel in train mode (B*L >= 2), got shape "
                                 f"{x.shape}")
            xhat, inv_std = _normalize(x, axes, eps)
            mean, var = x.mean(axis=axes), x.var(axis=axes, ddof=1)
        else:
            sums = allreduce(xp.append(x.sum(axis=axes, dtype=np.float64), float(n)))      # (H + 1,)
            n = sums[-1]
            if n < 2:
                raise ValueError(f"x must hold at least 2 values per channel over all processes in train mode, "
                                 f"got {n:g}")
            mean = (sums[:-1] / n).astype(x.dtype)
            d = x - _per_channel(mean, x.ndim)
            var_b = allreduce((d * d).sum(axis=axes, dtype=np.float64)) / n                 # biased
            inv_std = _per_channel((1.0 / xp.sqrt(var_b + eps)).astype(x.dtype), x.ndim)
            xhat = d * inv_std
            var = (var_b * (n / (n - 1.0))).astype(x.dtype)
        running_mean = (1.0 - momentum) * running_mean + momentum * mean
        running_var = (1.0 - momentum) * running_var + momentum * var
    else:
        inv_std = _per_channel(1.0 / xp.sqrt(running_var + eps), x.ndim)
        xhat = (x - _per_channel(running_mean, x.ndim)) * inv_std
    y, actx = channel_affine(xhat, gamma, beta)
    return y, (train, xhat, inv_std, actx, allreduce if train else None, n), running_mean, running_var


def batch_norm_vjp(ctx, gy):
    """-> (gx, ggamma, gbeta). In eval mode the statistics are constants: gx = gxhat / sqrt(running_var + eps).
    With allreduce (synchronised statistics) gx = inv_std (gxhat - mean(gxhat) - xhat mean(gxhat xhat)) with
    both means over the global batch (one allreduce of their channel sums); ggamma, gbeta are this process's
    share (the training loop sums parameter gradients over processes)."""
    train, xhat, inv_std, actx, allreduce, n = ctx
    gxhat, ggamma, gbeta = channel_affine_vjp(actx, gy)
    if not train:
        return gxhat * inv_std, ggamma, gbeta
    axes = _batch_axes(xhat.ndim)
    if allreduce is None:
        return _normalize_vjp(gxhat, xhat, inv_std, axes), ggamma, gbeta
    H = xhat.shape[1]
    sums = allreduce(backend.array_module(gxhat).concatenate([gxhat.sum(axis=axes, dtype=np.float64),
                                     (gxhat * xhat).sum(axis=axes, dtype=np.float64)])) / n      # (2H,)
    m1, m2 = (_per_channel(m.astype(xhat.dtype), xhat.ndim) for m in (sums[:H], sums[H:]))
    return inv_std * (gxhat - m1 - xhat * m2), ggamma, gbeta


# ---------------------------------------------------------------------------------------------
# Dropout


def dropout(x, p, u, train):
    """Dropout with the mask tied across time: one Bernoulli(1 - p) draw per (b, h), broadcast over L.

    y = x * mask, mask[b,h] = 1[u[b,h] >= p] / (1 - p) in {0, 1/(1 - p)}. Identity when not training or
    p == 0 (u unused). x (B, H, L) or (B, H); u: uniforms in [0, 1) of shape (B, H), e.g.
    rng.random((B, H)) (the models draw them per example: refssm.models.layers.Noise)  ->  y like x.
    ctx = (mask (B, H, 1) or None for the identity, x.shape).
    """
    x = as_array("x", x, min_ndim=2)
    p = float(in_range("p", p, 0.0, 1.0, hi_open=True))
    train = choice("train", train, (True, False))
    if not train or p == 0.0:
        return x, (None, x.shape)
    u = _match("u", in_range("u", u, 0.0, 1.0, hi_open=True), x.shape[:2])
    u = backend.array_module(x).asarray(u)                         # on x's device
    keep = u.reshape(x.shape[:2] + (1,) * (x.ndim - 2)) >= p        # (B, H, 1): P(keep) = 1 - p
    mask = (keep / (1.0 - p)).astype(x.dtype)
    return x * mask, (mask, x.shape)


def dropout_vjp(ctx, gy):
    """-> gx = gy * mask (gy itself for the identity)."""
    mask, shape = ctx
    gy = _cotangent(gy, shape)
    return gy if mask is None else gy * mask


# ---------------------------------------------------------------------------------------------
# Encoder, decoder and loss


def embedding(tokens, E):
    """Token embedding, channels first: y[b,h,l] = E[tokens[b,l], h].

    tokens (B, L) integers in [0, V); E (V, H)  ->  y (B, H, L). ctx = (tokens, V).
    """
    E = as_array("E", E, ndim=2)
    xp = backend.array_module(E)
    tokens = xp.asarray(tokens)                                     # on E's device
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be a 2-D integer array (B, L), got {tokens.dtype} of shape {tokens.shape}")
    if tokens.size:
        in_range("tokens", tokens, 0, E.shape[0] - 1)
    return xp.moveaxis(E[tokens], -1, 1), (tokens, E.shape[0], E.dtype)


def embedding_vjp(ctx, gy):
    """-> gE[v, h] = sum over (b, l) with tokens[b,l] == v of gy[b,h,l] (a scatter-add)."""
    tokens, V, dtype = ctx
    gy = as_array("gy", gy, ndim=3)
    _match("gy", gy, (tokens.shape[0], gy.shape[1], tokens.shape[1]))
    xp = backend.array_module(gy)
    gE = xp.zeros((V, gy.shape[1]), dtype)
    xp.add.at(gE, tokens, xp.moveaxis(gy, 1, -1))                 # CuPy >= 12 has add.at (cupyx.scatter_add)
    return gE


def masked_mean(x, mask=None):
    """Mean over the valid time steps: y[b,h] = sum_l mask[b,l] x[b,h,l] / sum_l mask[b,l].

    x (B, H, L); mask (B, L) bool, or None for all steps valid  ->  y (B, H). ctx = (w,),
    w = mask / count (B, L).
    """
    x = as_array("x", x, ndim=3)
    xp = backend.array_module(x)
    if mask is None:
        mask = xp.ones((x.shape[0], x.shape[2]), dtype=bool)
    mask = xp.asarray(mask)
    if mask.dtype != bool:
        raise ValueError(f"mask must be a boolean array, got dtype {mask.dtype}")
    _match("mask", mask, (x.shape[0], x.shape[2]))
    count = mask.sum(axis=1, keepdims=True)          # (B, 1)
    if bool((count == 0).any()):
        raise ValueError("mask must mark at least 1 valid step in every row, got a row with none")
    w = (mask / count).astype(x.dtype)               # (B, L)
    return xp.matmul(x, w[:, :, None])[..., 0], (w,)


def masked_mean_vjp(ctx, gy):
    """-> gx[b,h,l] = gy[b,h] w[b,l]."""
    (w,) = ctx
    gy = as_array("gy", gy, ndim=2)
    _match("gy", gy, (w.shape[0], gy.shape[1]))
    return gy[:, :, None] * w[:, None, :]


def cross_entropy(logits, labels, mask=None):
    """Mean softmax cross-entropy over classes on axis 1, averaged over the valid positions:

        loss = sum_{b,k} m[b,k] (logsumexp_c z[b,c,k] - z[b, labels[b,k], k]) / sum m

    logits (B, C) with labels (B,) (classification), or (B, C, K...) with labels (B, K...) (one class per
    step: sequence targets, next-token prediction); mask: bool like labels (None: every position valid).
    -> (loss float, ctx = (softmax, labels, weights m / sum m)).
    """
    z = as_array("logits", logits, min_ndim=2)
    xp = backend.array_module(z)
    labels = xp.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array, got {labels.dtype}")
    _match("labels", labels, z.shape[:1] + z.shape[2:])
    if z.shape[0] == 0:
        raise ValueError("logits must hold at least 1 example (B >= 1), got B = 0")
    in_range("labels", labels, 0, z.shape[1] - 1)
    if mask is None:
        w = xp.full(labels.shape, 1.0 / labels.size)
    else:
        mask = xp.asarray(mask)
        if mask.dtype != bool:
            raise ValueError(f"mask must be a boolean array, got dtype {mask.dtype}")
        _match("mask", mask, labels.shape)
        if not bool(mask.any()):
            raise ValueError("mask must mark at least 1 valid position, got none")
        w = mask / mask.sum()
    logp = backend.special_module(xp).log_softmax(z, axis=1)         # (B, C, ...)
    picked = xp.take_along_axis(logp, labels[:, None], axis=1)[:, 0]  # (B, ...)
    loss = -xp.sum(w * picked)
    return float(loss), (xp.exp(logp), labels, w.astype(z.dtype))


def cross_entropy_vjp(ctx, g=1.0):
    """-> glogits = g w (softmax(z) - onehot(labels)), w the position weights m / sum m."""
    probs, labels, w = ctx
    g = float(as_array("g", g, ndim=0))
    grad = probs * w[:, None]
    # grad[b, labels[b, k...], k...] -= w[b, k...] (one position per (b, k...): no repeats, so no add.at)
    xp, k = backend.array_module(grad), labels.ndim
    grid = [xp.arange(n).reshape((n,) + (1,) * (k - 1 - i)) for i, n in enumerate(labels.shape)]   # open mesh
    grad[(grid[0], labels, *grid[1:])] -= w
    return g * grad


def mse(pred, target):
    """Mean squared error: loss = mean_b (pred[b] - target[b])^2. pred, target (B,) -> (loss, ctx)."""
    pred = as_array("pred", pred, ndim=1)
    target = _match("target", as_array("target", target, ndim=1), pred.shape)
    if pred.size == 0:
        raise ValueError("pred must hold at least 1 example (B >= 1), got B = 0")
    d = pred - target
    return float((d * d).mean()), (d,)


def mse_vjp(ctx, g=1.0):
    """-> gpred = 2 g (pred - target) / B."""
    (d,) = ctx
    return float(as_array("g", g, ndim=0)) * 2.0 * d / d.size


def take_steps(x, index):
    """Read out chosen time steps: y[b,h,k] = x[b,h,index[b,k]].

    x (B, H, L); index (B, K) integers in [0, L), e.g. the last valid step (K = 1) or the last K steps
    where a sequence target is emitted  ->  y (B, H, K). ctx = (index, x.shape).
    """
    x = as_array("x", x, ndim=3)
    xp = backend.array_module(x)
    index = xp.asarray(index)                                       # on x's device
    if index.ndim != 2 or index.shape[0] != x.shape[0] or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"index must be an integer array (B = {x.shape[0]}, K), got {index.dtype} {index.shape}")
    in_range("index", index, 0, x.shape[2] - 1)
    return xp.take_along_axis(x, index[:, None, :], axis=2), (index, x.shape)


def take_steps_vjp(ctx, gy):
    """-> gx: gy scattered back to the chosen steps (summed where a step is chosen twice)."""
    index, shape = ctx
    xp = backend.array_module(gy)
    gx = xp.zeros(shape, gy.dtype)
    B, H, L = shape
    flat = (xp.arange(B)[:, None, None] * H + xp.arange(H)[None, :, None]) * L + index[:, None, :]   # (B, H, K)
    xp.add.at(gx.reshape(-1), flat, gy)                            # one integer index: CuPy's add.at takes it
    return gx
