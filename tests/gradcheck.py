"""Shared gradient-check helpers: a hand-written VJP against autograd and central differences.

Convention for complex inputs: the gradient of a real loss with respect to z = a + ib is reported
as dL/da + i dL/db. Checks therefore split complex inputs into real and imaginary parts, so that
autograd and finite differences see only real arrays.
"""

import numpy as np


def central_diff_grad(f, x, eps=1e-6):
    """d f / d x of a real scalar function f by central differences, x real or complex."""
    x = np.array(x, dtype=np.result_type(x, np.float64))
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        for unit in ((1.0,) if not np.iscomplexobj(x) else (1.0, 1j)):
            old = flat[i]
            flat[i] = old + eps * unit
            fp = f(x)
            flat[i] = old - eps * unit
            fm = f(x)
            flat[i] = old
            gflat[i] += unit * (fp - fm) / (2 * eps)
    return g


def check_vjp(loss_of, grads, inputs, *, autograd_loss=None, rtol=1e-6, atol=1e-8, eps=1e-6):
    """Compare hand-written gradients with central differences and, if given, autograd.

    loss_of(*inputs) -> float: the scalar loss computed with refssm's own forward.
    grads: list of arrays, the hand-written gradients (from the VJP) w.r.t. each of `inputs`.
    autograd_loss(*inputs): the same loss written with autograd.numpy; complex inputs are passed
        as complex arrays built from real leaves, so autograd differentiates real parts only.
    """
    import autograd

    inputs = [np.array(v) for v in inputs]
    for k, (x, g) in enumerate(zip(inputs, grads)):
        def f_k(xk, k=k):
            args = list(inputs)
            args[k] = xk
            return float(loss_of(*args))

        fd = central_diff_grad(f_k, x, eps=eps)
        np.testing.assert_allclose(g, fd, rtol=rtol, atol=atol, err_msg=f"input {k}: VJP vs finite differences")
        if autograd_loss is None:
            continue
        if np.iscomplexobj(x):
            def ag_k(re, im, k=k):
                args = list(inputs)
                args[k] = re + 1j * im
                return autograd_loss(*args)

            ga = autograd.grad(ag_k, 0)(x.real.copy(), x.imag.copy()) \
                + 1j * autograd.grad(ag_k, 1)(x.real.copy(), x.imag.copy())
        else:
            def ag_k(xk, k=k):
                args = list(inputs)
                args[k] = xk
                return autograd_loss(*args)

            ga = autograd.grad(ag_k)(x)
        np.testing.assert_allclose(g, ga, rtol=rtol, atol=atol, err_msg=f"input {k}: VJP vs autograd")
