"""Report 1: SpikingSSM's surrogate dynamic network (SDN) against the exact LIF it replaces.

Claim (SpikingSSM, Shen et al. AAAI 2025, A2; reference notes spikingssm A2.4): the SDN, a 153-parameter
causal CNN that predicts the leaked membrane tau u_{t-1} from the past 8 inputs, reproduces the spikes of
the hard-reset LIF (tau = 0.125, v_th = 1) on N(0, 1) currents: published 99.97 % per position. refssm's
SDN is its own (trained by validation/train_sdn.py). Here: agreement >= 99.9 % and membrane MAE <= 0.01.
Speed, measured and explained (not part of the claim): the paper's 7.5-101x training speed-ups at
L = 1K-8K are on a GPU; here the SDN-parallel neuron runs against the sequential LIF on this CPU.

    python validation/report_1_sdn.py [--quick]
"""

import sys
import time

import numpy as np

from refssm import neurons, sdn, spiking, surrogate
from refssm.kernels import neurons as fast
from run_all import Report, plain_log_ticks, plt

TAU = 0.125


def best(f, calls=5):
    t = np.inf
    for _ in range(calls):
        t0 = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - t0)
    return t


def main(quick):
    plt_ = plt()
    r = Report("1_sdn", "SDN vs exact LIF (SpikingSSM)",
               "the SDN-parallel neuron fires where the exact hard-reset LIF (tau = 0.125, v_th = 1) fires on "
               ">= 99.9 % of positions for N(0, 1) inputs (published 99.97 %), with membrane MAE <= 0.01")
    params = sdn.load(TAU)
    rng = np.random.default_rng(2025)
    n, L = (32, 1024) if quick else (200, 1024)
    y = rng.standard_normal((n, L))
    acc, mae = sdn.spike_accuracy(params, TAU, y), sdn.mem_mae(params, TAU, y)
    m_exact, s_exact = sdn.lif_target(y, TAU)
    s_sdn, z = sdn.sdn_spikes(y, params)
    wrong = s_sdn != s_exact
    seq_err = float(np.mean(wrong.any(axis=-1)))
    v_exact = m_exact + y                                       # pre-reset potential of the exact LIF
    near = np.abs(v_exact[wrong] - 1.0)
    r.text(f"""
refssm's shipped SDN (`refssm.sdn.load({TAU})`, {sdn.N_PARAMS} parameters) against the exact oracle
`refssm.neurons.lif` on {n} fresh N(0, 1) sequences of length {L} (seed 2025, not the training data).
""")
    r.table(["measure", "refssm", "published (SpikingSSM)"], [
        ["spike agreement per position", f"{100 * acc:.4f} %", "99.97 % (A2.4: 99.973-99.978 %)"],
        ["membrane MAE of m_hat vs tau u_{t-1}", f"{mae:.2e}", "1.0e-3 (shipped weights)"],
        ["firing rate (exact LIF)", f"{s_exact.mean():.3f}", "about 0.15"],
        ["sequences with at least one spike error", f"{100 * seq_err:.1f} %", "about 21 % (L = 1024)"],
        ["|v - v_th| at a wrong spike: median, max", f"{np.median(near):.1e}, {near.max():.1e}" if near.size
         else "none", "mis-resets only near threshold"],
    ])
    r.number("spike agreement", f"{100 * acc:.3f} %")
    r.number("membrane MAE", f"{mae:.1e}")

    # speed: the neuron alone, forward and forward+backward, at L = 1K..8K
    rows = 64 if quick else 256
    Ls = (1024, 2048) if quick else (1024, 2048, 4096, 8192)
    sg = surrogate.get("triangle")
    fast.lif(rng.standard_normal((2, 16)), TAU)                 # compile (or load the cache) before timing
    times = {k: [] for k in ("numpy LIF", "Numba LIF", "SDN", "numpy LIF BPTT fwd+bwd", "SDN fwd+bwd")}
    for Ln in Ls:
        x = rng.standard_normal((rows, Ln))
        g = rng.standard_normal((rows, Ln))
        times["numpy LIF"].append(best(lambda: neurons.lif(x, TAU)))
        times["Numba LIF"].append(best(lambda: fast.lif(x, TAU)))
        times["SDN"].append(best(lambda: sdn.sdn_spikes(x, params)))

        def bptt():
            _, ctx = spiking.lif(x, TAU, 1.0, sg, "bptt_detach_reset")
            spiking.lif_vjp(ctx, g)

        def sdn_train():
            _, ctx = spiking.sdn_lif(x, params, sg)
            spiking.sdn_lif_vjp(ctx, g)

        times["numpy LIF BPTT fwd+bwd"].append(best(bptt))
        times["SDN fwd+bwd"].append(best(sdn_train))
    rows_tab = []
    for i, Ln in enumerate(Ls):
        t = {k: v[i] for k, v in times.items()}
        rows_tab.append([Ln] + [f"{1e3 * t[k]:.1f}" for k in times] +
                        [f"{t['numpy LIF'] / t['SDN']:.1f}x", f"{t['Numba LIF'] / t['SDN']:.2f}x",
                         f"{t['numpy LIF BPTT fwd+bwd'] / t['SDN fwd+bwd']:.1f}x"])
    r.text(f"""
### Speed of the neuron alone ({rows} sequences, best of 5, ms; ratios > 1: the SDN is faster)

The SDN decides every step at once from the past 8 inputs (about 150 multiply-adds per step); the
exact LIF is a scan over time (3 operations per step, but L sequential steps).
""")
    r.table(["L"] + [f"{k} ms" for k in times] + ["numpy/SDN", "Numba/SDN", "BPTT/SDN train"], rows_tab)
    sp = [times["numpy LIF BPTT fwd+bwd"][i] / times["SDN fwd+bwd"][i] for i in range(len(Ls))]
    r.number("train speed-up vs numpy BPTT", f"{min(sp):.1f}-{max(sp):.1f}x (published GPU 7.5-101x)")
    fwd = [times["numpy LIF"][i] / times["SDN"][i] for i in range(len(Ls))]
    flops = rows * Ls[-1] * 2 * (8 * 8 + 8 * 8 + 8)                 # the SDN's multiply-adds at the largest L
    r.text(f"""
**Why the speed-ups differ from the paper's.** The published 7.5x (L = 1K) to 101x (L = 8K) are whole
training steps of the network on a GPU (A2.4, Table 1): there the SDN step time hardly grows with L
(183 to 253 ms: the GPU runs all time steps at once), while BPTT through the sequential LIF needs one
small kernel launch and one autograd node per time step, forward and backward, and grows faster than L
(1370 to 25600 ms). On this CPU both neurons cost time linear in L, so the ratio stays flat: the SDN
runs at {min(fwd):.2f}-{max(fwd):.2f}x the speed of the numpy oracle forward, {min(sp):.2f}-{max(sp):.2f}x
for forward + backward, and at {times['Numba LIF'][-1] / times['SDN'][-1]:.2f}x the speed of the Numba scan.
The SDN does about 150 multiply-adds per step and row (two 8x8 layers on 8 lags; {flops / 1e9:.1f} GFLOP at
L = {Ls[-1]}) where the LIF does 3 operations; a CPU core runs the scan's serial dependency at full speed,
so parallelism over time buys nothing here while the extra arithmetic costs. The SDN pays off where
per-step overhead, not arithmetic, dominates: GPU kernel launches and autograd graphs of L nodes.
""")
    # figure 1: speed
    fig, ax = plt_.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    for k, marker in zip(times, "os^vD"):
        (ax[0] if "fwd+bwd" not in k else ax[1]).loglog(Ls, 1e3 * np.array(times[k]), marker=marker, label=k)
    ax[0].set(title="forward: spikes of the neuron", xlabel="sequence length L", ylabel="ms")
    ax[1].set(title="training: forward + backward", xlabel="sequence length L", ylabel="ms")
    for a in ax:
        a.legend(fontsize=8)
        plain_log_ticks(a)
        a.set_xticks(Ls, [f"{Ln // 1024}K" for Ln in Ls])
    r.figure(fig, "speed", f"Wall time of the neuron on {rows} sequences (this CPU); SDN = parallel "
                           "prediction of the membrane from 8 past inputs")
    # figure 2: a trace with the rare disagreement
    row = int(np.argmax(wrong.any(axis=-1)))
    t_bad = int(np.argmax(wrong[row])) if wrong[row].any() else 40
    t0 = max(0, t_bad - 40)
    ts = np.arange(t0, t0 + 60)
    fig, ax = plt_.subplots(figsize=(10, 3.2))
    ax.plot(ts, v_exact[row, ts], "k-", lw=1.2, label="exact LIF: v = tau u_{t-1} + y")
    ax.plot(ts, z[row, ts] + 1.0, "C1--", lw=1.2, label="SDN: m_hat + y")
    ax.axhline(1.0, color="gray", lw=0.8, ls=":", label="threshold")
    ax.plot(ts[s_exact[row, ts] > 0], v_exact[row, ts][s_exact[row, ts] > 0], "k^", ms=5, label="exact spikes")
    bad = ts[wrong[row, ts]]
    ax.plot(bad, v_exact[row, bad], "rx", ms=10, mew=2, label="SDN disagrees")
    ax.set(xlabel="time step", ylabel="pre-reset potential", title=f"sequence {row}: the SDN tracks the "
           "exact membrane; a disagreement happens only next to the threshold")
    ax.legend(fontsize=7, ncol=3, loc="lower left")
    r.figure(fig, "trace", "Exact pre-reset potential and the SDN's prediction around a rare disagreement")
    ok = acc >= 0.999 and mae <= 0.01
    return r.finish(ok, "" if ok else f"agreement {100 * acc:.3f} %, MAE {mae:.2e}")


if __name__ == "__main__":
    sys.exit(main("--quick" in sys.argv))
