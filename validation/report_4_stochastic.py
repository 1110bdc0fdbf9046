"""Report 4: stochastic spiking (P-SpikeSSM, Bal & Sengupta 2024) and its straight-through gradient.

Claims (reference notes pspikessm 3.3-3.4): the sampler s = 1[U < clamp(p, 0, 1)], U ~ Uniform[0, 1), fires
with rate clamp(p, 0, 1) (exactly 0 for p <= 0 and 1 for p >= 1; within 5 binomial standard errors
elsewhere); its straight-through gradient 1[0 <= p <= 1] is the derivative of the expectation
E[s] = clamp(p, 0, 1) (matched by a finite difference of the Monte Carlo mean with common random numbers),
hence unbiased for any loss linear in the spikes. For a loss that is not linear in the spikes it is biased;
the report measures by how much, against the exact gradient of the expected loss.

    python validation/report_4_stochastic.py [--quick]
"""

import itertools
import sys

import numpy as np

from refssm import neurons, spiking
from run_all import Report, plt


def main(quick):
    plt_ = plt()
    r = Report("4_stochastic", "Stochastic spiking and the straight-through gradient (P-SpikeSSM)",
               "the Bernoulli sampler fires at rate clamp(p, 0, 1) and the straight-through gradient 1[0 <= p <= 1] "
               "equals d E[s]/dp (unbiased for losses linear in the spikes)")
    rng = np.random.default_rng(4)
    N = 200_000 if quick else 2_000_000
    ps = np.linspace(-0.3, 1.3, 33)
    rates = np.array([neurons.stochastic(np.full(N, p), rng).mean() for p in ps])
    target = np.clip(ps, 0, 1)
    se = np.sqrt(target * (1 - target) / N)
    z = np.abs(rates - target) / np.where(se > 0, se, 1)
    ends_exact = bool(np.all(rates[(ps <= 0) | (ps >= 1)] == target[(ps <= 0) | (ps >= 1)]))
    rate_ok = ends_exact and bool(np.all(z[(ps > 0) & (ps < 1)] < 5))
    # d E[s]/dp by a central difference of the Monte Carlo mean, the same uniforms on both sides
    eps = 0.02
    U = np.random.default_rng(5).random(N)
    fd = np.array([(np.mean(U < np.clip(p + eps, 0, 1)) - np.mean(U < np.clip(p - eps, 0, 1))) / (2 * eps)
                   for p in ps])
    st = spiking.sample_vjp(ps, np.ones_like(ps))               # the straight-through VJP with dL/ds = 1
    fd_se = np.sqrt(1.0 / (2 * eps * N))
    away = np.abs(np.abs(ps - 0.5) - 0.5) > eps                 # a window eps from the kinks at 0 and 1
    grad_ok = bool(np.all(np.abs(fd[away] - st[away]) < 6 * fd_se + 1e-12))
    r.text(f"""
`refssm.neurons.stochastic(p, rng)` draws U ~ Uniform[0, 1) from an explicit generator and returns
1[U < clamp(p, 0, 1)]; P-SpikeSSM trains through it with the straight-through clamp
(`refssm.spiking.sample_vjp`: dL/dp = dL/ds 1[0 <= p <= 1]). {N:,} samples per p, p from -0.3 to 1.3.

| measure | result |
|---|---|
| rate at p <= 0 and p >= 1 (must be exactly 0 and 1) | {'exact' if ends_exact else 'NOT exact'} |
| max |rate - clamp(p)| / binomial s.e., 0 < p < 1 | {z[(ps > 0) & (ps < 1)].max():.2f} (claim: < 5) |
| max |FD of E[s] - straight-through|, {eps} away from 0 and 1 | {np.abs(fd[away] - st[away]).max():.4f} (s.e. {fd_se:.4f}) |
""")
    # a loss that is not linear in the spikes: the straight-through estimate is biased
    K, w, c = 3, np.array([1.0, -2.0, 1.5]), 0.2
    p = np.array([0.3, 0.6, 0.8])

    def expected_loss(p):
        return sum(np.prod(np.where(s, p, 1 - p)) * (w @ np.array(s) - c) ** 2
                   for s in itertools.product((0.0, 1.0), repeat=K))

    exact = np.array([expected_loss(np.where(np.arange(K) == i, 1.0, p)) - expected_loss(np.where(np.arange(K) == i, 0.0, p))
                      for i in range(K)])                      # E[loss] is linear in each p_i
    S = (np.random.default_rng(6).random((N, K)) < p).astype(float)
    st_mean = np.mean(2 * (S @ w - c)[:, None] * w, axis=0) * spiking.sample_vjp(p, np.ones(K))
    r.text(f"""
**Beyond linear losses.** For L = (w . s - c)^2 with w = {w.tolist()}, c = {c}, p = {p.tolist()}, the exact
gradient of E[L] (E[L] is multilinear in p: dE/dp_i = E[L | s_i = 1] - E[L | s_i = 0], by enumeration of the
2^{K} outcomes) against the mean straight-through estimate 2 (w . s - c) w_i over {N:,} samples:
""")
    bias = w ** 2 * (2 * p - 1)
    r.table(["i", "exact dE[L]/dp_i", "mean straight-through", "bias", "w_i^2 (2 p_i - 1)"],
            [[i, f"{exact[i]:.4f}", f"{st_mean[i]:.4f}", f"{st_mean[i] - exact[i]:+.4f}", f"{bias[i]:+.4f}"]
             for i in range(K)])
    r.text("With a = w.s - c - w_i s_i: dE[L]/dp_i = E[(a + w_i)^2 - a^2] = 2 w_i E[a] + w_i^2, while the "
           "straight-through mean is E[2 (a + w_i s_i) w_i] = 2 w_i E[a] + 2 w_i^2 p_i: the bias w_i^2 (2 p_i - 1) "
           "comes from differentiating (w.s - c)^2 as if s_i moved continuously. It vanishes for losses linear "
           "in s; P-SpikeSSM accepts it for a cheap, low-variance gradient.")
    grad_ok &= bool(np.all(np.abs(st_mean - exact - bias) < 0.02))
    fig, ax = plt_.subplots(1, 2, figsize=(10, 3.3), layout="constrained")
    ax[0].plot(ps, target, "k-", lw=1, label="clamp(p, 0, 1)")
    ax[0].plot(ps, rates, "o", ms=4, label=f"measured rate ({N:,} samples)")
    ax[0].set(xlabel="p", ylabel="firing rate", title="sampler rate")
    ax[0].legend(fontsize=8)
    dense = np.linspace(ps[0], ps[-1], 1601)
    ax[1].plot(dense, spiking.sample_vjp(dense, np.ones_like(dense)), "k-", lw=1,
               label="straight-through 1[0 <= p <= 1]")
    ax[1].plot(ps, fd, "o", ms=4, label=f"FD of the mean, eps = {eps}, common U")
    ax[1].set(xlabel="p", ylabel="d E[s] / dp", title="straight-through gradient = derivative of the expectation")
    ax[1].legend(fontsize=8, loc="center")
    r.figure(fig, "rate_gradient", "Left: firing rate of the sampler against clamp(p). Right: the straight-through "
                                   "gradient against a finite difference of the expected spike")
    r.number("rate z-score max", f"{z[(ps > 0) & (ps < 1)].max():.2f}")
    r.number("ST vs FD of E[s]", f"{np.abs(fd[away] - st[away]).max():.4f}")
    ok = rate_ok and grad_ok
    return r.finish(ok, "" if ok else f"rate ok {rate_ok}, gradient ok {grad_ok}")


if __name__ == "__main__":
    sys.exit(main("--quick" in sys.argv))
