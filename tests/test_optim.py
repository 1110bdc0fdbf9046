"""refssm.optim: AdamW against the paper's algorithm written out here, the cosine warm-up schedule at
its landmarks, and global-norm clipping."""

import math

import numpy as np
import pytest

from refssm.optim import adamw_init, adamw_step, clip_grad_norm, cosine_schedule


def adamw_reference(theta0, grads, *, alpha, lam, beta1=0.9, beta2=0.999, eps=1e-8):
    """Loshchilov & Hutter (2019), Algorithm 2 (AdamW) with schedule multiplier eta_t = 1, one scalar
    parameter at a time. grads[t-1] is the gradient seen at step t. -> (theta_t, m_t, v_t) per step."""
    theta, m, v, out = theta0, 0.0, 0.0, []
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        theta = theta - (alpha * m_hat / (math.sqrt(v_hat) + eps) + lam * theta)
        out.append((theta, m, v))
    return out


def test_adamw_two_steps_match_paper_algorithm_with_groups():
    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(2, 3)), "A_imag": rng.normal(size=4)}
    g1 = {k: rng.normal(size=p.shape) for k, p in params.items()}
    g2 = {k: 1e-3 * rng.normal(size=p.shape) for k, p in params.items()}
    lr = {"W": 0.01, "A_imag": 0.001}                    # the SSM group: own lr, no weight decay
    wd = {"W": 0.05, "A_imag": 0.0}
    betas = (0.8, 0.95)

    state = adamw_init(params)
    p1, state1 = adamw_step(params, g1, state, lr=lr, weight_decay=wd, betas=betas, eps=1e-6)
    p2, state2 = adamw_step(p1, g2, state1, lr=lr, weight_decay=wd, betas=betas, eps=1e-6)

    assert (state1["step"], state2["step"]) == (1, 2)
    for k in params:
        # paper's alpha is the step size lr; its decay rate lambda is lr * weight_decay
        for idx in np.ndindex(params[k].shape):
            (t1, m1, v1), (t2, m2, v2) = adamw_reference(
                params[k][idx], [g1[k][idx], g2[k][idx]], alpha=lr[k], lam=lr[k] * wd[k],
                beta1=betas[0], beta2=betas[1], eps=1e-6)
            assert math.isclose(p1[k][idx], t1, rel_tol=1e-13, abs_tol=1e-15)
            assert math.isclose(p2[k][idx], t2, rel_tol=1e-13, abs_tol=1e-15)
            assert math.isclose(state2["m"][k][idx], m2, rel_tol=1e-13, abs_tol=1e-18)
            assert math.isclose(state2["v"][k][idx], v2, rel_tol=1e-13, abs_tol=1e-18)


def test_adamw_first_step_by_hand():
    # t = 1: m_hat = g, v_hat = g^2, so p1 = p0 - lr wd p0 - lr g / (|g| + eps)
    p1, _ = adamw_step({"p": np.array([1.0])}, {"p": np.array([0.5])}, adamw_init({"p": np.array([1.0])}),
                       lr=0.1, weight_decay=0.01)
    assert math.isclose(p1["p"][0], 1.0 - 0.001 - 0.1 * 0.5 / (0.5 + 1e-8), rel_tol=1e-15)


def test_weight_decay_only_where_asked():
    # with zero gradients Adam's update is 0 / (0 + eps) = 0, leaving only the decoupled decay
    params = {"decayed": np.array([2.0, -4.0]), "kept": np.array([3.0])}
    grads = {k: np.zeros_like(p) for k, p in params.items()}
    new, _ = adamw_step(params, grads, adamw_init(params), lr=0.1, weight_decay={"decayed": 0.5, "kept": 0.0})
    np.testing.assert_allclose(new["decayed"], [2.0 * 0.95, -4.0 * 0.95], rtol=1e-15)
    np.testing.assert_array_equal(new["kept"], [3.0])


def test_adamw_first_step_size_is_lr_at_every_gradient_scale():
    g = np.array([1e-3, -1.0, 1e3])            # bias correction: |step| = lr |g| / (|g| + eps), about lr
    new, _ = adamw_step({"p": np.zeros(3)}, {"p": g}, adamw_init({"p": np.zeros(3)}), lr=0.01, weight_decay=0.1)
    np.testing.assert_allclose(new["p"], -0.01 * np.sign(g), rtol=1e-5)


def test_adamw_is_pure_and_state_survives_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(1)
    params = {"a": rng.normal(size=3), "b": rng.normal(size=(2, 2))}
    grads = {k: rng.normal(size=p.shape) for k, p in params.items()}
    snap = {k: p.copy() for k, p in params.items()}
    p1, s1 = adamw_step(params, grads, adamw_init(params), lr=0.01, weight_decay=0.01)
    for k in params:
        np.testing.assert_array_equal(params[k], snap[k])

    with h5py.File(tmp_path / "opt.h5", "w") as f:
        f["step"] = s1["step"]
        for part in ("m", "v"):
            for k, arr in s1[part].items():
                f[f"{part}/{k}"] = arr
    with h5py.File(tmp_path / "opt.h5", "r") as f:
        loaded = {"step": f["step"][()], "m": {k: f[f"m/{k}"][()] for k in params},
                  "v": {k: f[f"v/{k}"][()] for k in params}}
    direct, _ = adamw_step(p1, grads, s1, lr=0.01, weight_decay=0.01)
    reloaded, s2 = adamw_step(p1, grads, loaded, lr=0.01, weight_decay=0.01)
    assert s2["step"] == 2
    for k in params:
        np.testing.assert_array_equal(direct[k], reloaded[k])


def test_cosine_schedule_landmarks():
    T, W, base, lo = 110, 10, 1e-3, 1e-5
    assert cosine_schedule(0, T, W, base, lo) == 0.0
    assert math.isclose(cosine_schedule(5, T, W, base, lo), 0.5e-3, rel_tol=1e-15)   # linear warm-up
    assert math.isclose(cosine_schedule(W, T, W, base, lo), base, rel_tol=1e-15)
    assert math.isclose(cosine_schedule(60, T, W, base, lo), (base + lo) / 2, rel_tol=1e-14)  # half-way
    assert math.isclose(cosine_schedule(35, T, W, base, lo), lo + (base - lo) * (1 + math.sqrt(0.5)) / 2,
                        rel_tol=1e-14)                                               # q = 1/4
    assert math.isclose(cosine_schedule(T, T, W, base, lo), lo, rel_tol=1e-12)
    assert cosine_schedule(T + 50, T, W, base, lo) == lo
    lrs = [cosine_schedule(s, T, W, base, lo) for s in range(W, T + 1)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert cosine_schedule(0, 100, 0, 2.0) == 2.0                                    # no warm-up


def test_clip_grad_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}                    # global norm 5
    clipped, total = clip_grad_norm(grads, 1.0)
    assert total == 5.0
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0], rtol=1e-15)
    np.testing.assert_allclose(clipped["b"], [[0.8]], rtol=1e-15)
    np.testing.assert_array_equal(grads["a"], [3.0, 0.0])                          # input untouched
    unclipped, total = clip_grad_norm(grads, 10.0)
    assert total == 5.0
    np.testing.assert_array_equal(unclipped["b"], [[4.0]])


P = {"w": np.ones(2)}
G = {"w": np.ones(2)}
BAD = [
    (lambda: adamw_step(P, G, adamw_init(P), lr=-1.0, weight_decay=0.0), r"lr must lie in \[0, inf\)"),
    (lambda: adamw_step(P, G, adamw_init(P), lr={"x": 1.0}, weight_decay=0.0), "must name every parameter"),
    (lambda: adamw_step(P, G, adamw_init(P), lr=0.1, weight_decay={"w": -1.0}), r"weight_decay\['w'\] must lie"),
    (lambda: adamw_step(P, {"v": np.ones(2)}, adamw_init(P), lr=0.1, weight_decay=0.0), "grads must have the keys"),
    (lambda: adamw_step(P, {"w": np.ones(3)}, adamw_init(P), lr=0.1, weight_decay=0.0), r"grads\['w'\] must have"),
    (lambda: adamw_step(P, {"w": np.array([1.0, np.nan])}, adamw_init(P), lr=0.1, weight_decay=0.0), "must be finite"),
    (lambda: adamw_step(P, G, adamw_init(P), lr=0.1, weight_decay=0.0, betas=(0.9, 1.0)), r"betas\[1\] must lie"),
    (lambda: adamw_step(P, G, adamw_init(P), lr=0.1, weight_decay=0.0, eps=0.0), r"eps must lie in \(0, inf\)"),
    (lambda: adamw_step(P, G, {"step": 0}, lr=0.1, weight_decay=0.0), "state must be a dict"),
    (lambda: adamw_init({"c": np.ones(2, dtype=complex)}), "must be real"),
    (lambda: cosine_schedule(0, 10, 11, 1.0), r"warmup_steps must lie in \[0, total_steps\]"),
    (lambda: cosine_schedule(0, 0, 0, 1.0), "total_steps must be an integer >= 1"),
    (lambda: cosine_schedule(-1, 10, 0, 1.0), "step must be an integer >= 0"),
    (lambda: cosine_schedule(0, 10, 0, 1.0, min_lr=2.0), r"min_lr must lie in \[0, 1\]"),
    (lambda: clip_grad_norm(G, 0.0), r"max_norm must lie in \(0, inf\)"),
]


@pytest.mark.parametrize("call, message", BAD)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
