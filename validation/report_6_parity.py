"""Report 6: convention parity of refssm.conventions with SpikingJelly, snnTorch and Norse.

Claim: each preset reproduces its library neuron (reference notes ecosystem 1.1-1.5; the libraries'
source, read for facts): in float64, spikes equal (exact threshold ties included), membranes to 1e-12 and
gradients to 1e-10 relative; in the libraries' default float32 to float32 precision. The report states what
each library does, the mapping onto refssm's LIF, and the measured agreement with the installed versions.
Without PyTorch here, `--anchor PYTHON` (an interpreter with refssm[parity]) measures there; with neither,
the report lists the conventions and says that the parity was not measured (the claim is then untested,
and the script exits 0 only if the refssm side of the table is consistent).

    python validation/report_6_parity.py [--anchor /tmp/anchor/bin/python] [--quick]
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from refssm import conventions as cv

CONFIGS = [
    ("spikingjelly_lif", {}, "LIFNode defaults, ATan(alpha=2)"),
    ("spikingjelly_lif", dict(tau=4.0, decay_input=False, v_reset=-0.5, detach_reset=True, surrogate="sigmoid",
                              alpha=4.0), "decay_input=False, V_reset=-0.5, detach_reset, Sigmoid(4)"),
    ("spikingjelly_lif", dict(v_reset=None), "soft reset (v_reset=None)"),
    ("spikingjelly_if", {}, "IFNode defaults"),
    ("spikingjelly_if", dict(v_reset=None, detach_reset=True), "IFNode soft reset, detach_reset"),
    ("snntorch_leaky", dict(beta=0.9), "Leaky(beta=0.9) defaults (subtract, atan)"),
    ("snntorch_leaky", dict(beta=0.75, reset_mechanism="zero", surrogate="fast_sigmoid"), "reset zero, fast_sigmoid(25)"),
    ("snntorch_leaky", dict(beta=0.875, reset_mechanism="none", surrogate="sigmoid", slope=5.0), "no reset, sigmoid(5)"),
    ("norse_lif", {}, "LIF defaults (SuperSpike)"),
    ("norse_lif", dict(dt=2.0 ** -10, tau_mem_inv=512.0, tau_syn_inv=1024.0), "dyadic dt tau^-1 (exact ties)"),
    ("norse_lif", dict(v_leak=0.1, v_reset=-0.2, tau_syn_inv=150.0), "v_leak=0.1, v_reset=-0.2"),
]
MODES = ("float64", "float64_input", "float32")


def inputs(seed, T=64):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0.6, 1.0, (4, 3, T)), rng.integers(-1, 5, (4, 2, T)) / 2.0], axis=1)
    g = rng.integers(-16, 17, x.shape) / 8.0            # few-bit upstream gradients (see tests/test_parity.py)
    return x, g


def measure():
    """Run every config through the preset and the library in each mode: a list of result dicts."""
    out = []
    for i, (name, params, label) in enumerate(CONFIGS):
        x, g = inputs(i)
        s, m, vjp = cv.preset(name)(x, **params)
        gx = vjp(g)
        thr = 1.0
        for mode in MODES:
            lib = cv.run_library(name, x, g, mode, **params)
            out.append(dict(name=name, label=label, mode=mode, version=cv.library_version(name),
                            spike_mismatch=int(np.sum(s != lib["spikes"])), spikes=int(s.size),
                            ties=int(np.sum(m == thr)), membrane=float(np.abs(m - lib["membrane"]).max()),
                            grad=float(np.abs(gx - lib["g_x"]).max() / np.abs(gx).max())))
    import torch
    return dict(torch=torch.__version__, results=out)


FACTS = [
    ("SpikingJelly", "spikingjelly_lif", "H = V + (X - (V - V_r))/tau; S = 1[H >= V_th]; V = S V_r + (1-S) H (soft: H - S V_th)",
     "same step, from H", "kept (detach_reset=False)", "Sigmoid(alpha=4)",
     "refssm LIF: tau' = 1 - 1/tau, x' = X/tau (decay_input), v_th' = V_th - V_r, fire at >=; H = v + V_r"),
    ("SpikingJelly", "spikingjelly_if", "H = V + X; S = 1[H >= V_th]; reset as LIFNode",
     "same step, from H", "kept", "Sigmoid(alpha=4)",
     "snnTorch's recurrence with beta = 1 in H - V_r (tau = 1 is outside refssm's LIF)"),
    ("snnTorch", "snntorch_leaky", "reset = 1[mem_(t-1) > thr] (detached); mem = beta mem + x - reset thr; spk = 1[mem > thr]",
     "next step, undecayed", "detached, always", "atan(alpha=2)",
     "its own recurrence (`_previous_step_reset`): refssm's soft reset decays the subtraction, snnTorch's does not"),
    ("Norse", "norse_lif", "i += x; v_dec = v + dt tau_m^-1 ((v_leak - v) + i); i -= dt tau_s^-1 i; z = 1[v_dec > v_th]; v = (1-z) v_dec + z v_r",
     "same step, hard", "kept (feed-forward)", "SuperSpike: 1/(|z|+1)^2, alpha unused",
     "synaptic filter (ssm.scan, Abar = 1 - dt tau_s^-1) then refssm LIF: tau = 1 - dt tau_m^-1, input dt tau_m^-1 (i + v_leak - v_r), fire at >"),
]


def main(argv):
    quick = "--quick" in argv
    anchor = argv[argv.index("--anchor") + 1] if "--anchor" in argv else None
    if "--measure" in argv:                              # the child run under the anchor interpreter
        Path(argv[argv.index("--measure") + 1]).write_text(json.dumps(measure()))
        return 0
    from run_all import Report, plt
    plt_ = plt()
    r = Report("6_parity", "Convention parity with SpikingJelly, snnTorch and Norse",
               "each refssm.conventions preset reproduces its library: float64 spikes equal (exact ties included), "
               "membranes to 1e-12, gradients to 1e-10 relative; float32 runs to float32 precision")
    data, where = None, None
    try:
        import torch  # noqa: F401
        data, where = measure(), sys.executable
    except ImportError:
        if anchor:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "parity.json"
                rc = subprocess.call([anchor, __file__, "--measure", str(path)])
                if rc == 0:
                    data, where = json.loads(path.read_text()), anchor
    r.text("""
### What each library does, and the mapping

Equations as the libraries' source states them (versions below), in refssm's layout (time last). The
membrane each preset returns is the library's: SpikingJelly's pre-reset H, snnTorch's mem, Norse's recorded v
(after its reset).
""")
    r.table(["library", "preset", "equations", "reset", "gradient through reset", "default surrogate", "mapping onto refssm"],
            [list(f) for f in FACTS])
    ok = True
    if data is None:
        r.text("**Parity not measured**: PyTorch is not importable here and no `--anchor` interpreter was given "
               "(install `refssm[parity]`, or pass `--anchor`).")
        r.number("parity", "not measured (no PyTorch)")
        return r.finish(True, "(conventions listed; parity not measured without PyTorch)")
    res = data["results"]
    versions = {x["name"]: x["version"] for x in res}
    r.text(f"""
### Measured agreement

Run with {where}: torch {data['torch']}, spikingjelly {versions.get('spikingjelly_lif')}, snntorch
{versions.get('snntorch_leaky')}, norse {versions.get('norse_lif')}. Input: 4 x 5 sequences of 64 steps (3 random
N(0.6, 1) channels, 2 dyadic channels whose potentials hit the threshold exactly; "ties": positions where the
preset's membrane equals the threshold exactly), upstream gradients multiples of 1/8. Errors: spike
mismatches (count), max |membrane difference|, max |g_x difference| / max |g_x|.
Modes: **float64** (input, parameters and state float64 tensors), **float64_input** (float64 input, parameters
as Python floats: what a user who casts only the data gets), **float32** (the libraries' defaults).
""")
    rows = []
    for x in res:
        rows.append([x["name"], x["label"], x["mode"], f"{x['spike_mismatch']}/{x['spikes']}", x["ties"],
                     f"{x['membrane']:.1e}", f"{x['grad']:.1e}"])
        if x["mode"] == "float64":
            ok &= x["spike_mismatch"] == 0 and x["membrane"] <= 1e-12 and x["grad"] <= 1e-10
        if x["mode"] == "float32":
            ok &= x["spike_mismatch"] == 0 and x["membrane"] <= 1e-4 and x["grad"] <= 1e-4
    r.table(["preset", "settings", "mode", "spike mismatches", "ties", "membrane", "gradient (rel)"], rows)
    f64 = [x for x in res if x["mode"] == "float64"]
    r.number("float64 worst membrane / gradient", f"{max(x['membrane'] for x in f64):.1e} / "
                                                  f"{max(x['grad'] for x in f64):.1e}")
    r.number("spike mismatches", str(sum(x["spike_mismatch"] for x in res)))
    r.text("""
### Where the libraries round in float32

- **snnTorch** makes spikes with `.float()` (float32) whatever the input dtype. So the gradient reaching its
  surrogate is float32, its `sigmoid` surrogate multiplies that gradient by the slope in float32, and its
  subtractive reset computes `reset * threshold` with the float32 spike, i.e. with float32(threshold) (a
  threshold such as 0.7 drifts the membrane by 1.2e-8 per reset; `tests/test_parity.py` bounds it). It also
  stores a Python-float `beta` or `threshold` as a float32 tensor: the *float64_input* rows.
- **Norse** stores Python-float `LIFParameters` as float32 tensors (so `dt * tau_mem_inv` is float32(0.1)) and
  starts the module's state `v` as a float32 tensor: the *float64_input* rows.
- **SpikingJelly** keeps Python-float parameters and runs its torch reference step in the input's dtype for
  float64; float32 inputs go to its fused CPU kernel, which agrees to float32 rounding.
""")
    # figure: one input through the four presets, to see when each resets
    x = np.r_[np.full(6, 0.6), 1.2, 0.0, np.full(6, 0.45), 2.4, np.zeros(5)]
    fig, axes = plt_.subplots(1, 4, figsize=(12, 3), sharex=True, layout="constrained")
    shows = [("spikingjelly_lif", dict(tau=2.0), "SpikingJelly LIF tau=2: H"),
             ("spikingjelly_if", {}, "SpikingJelly IF: H"),
             ("snntorch_leaky", dict(beta=0.5), "snnTorch Leaky beta=0.5: mem"),
             ("norse_lif", dict(dt=2.0 ** -10, tau_mem_inv=512.0, tau_syn_inv=1024.0), "Norse LIF (a=0.5, b=1): v")]
    for ax, (name, params, title) in zip(axes, shows):
        s, m, _ = cv.preset(name)(x, **params)
        t = np.arange(x.size)
        ax.step(t, x, where="mid", color="0.75", lw=1, label="input x")
        ax.plot(t, m, "o-", ms=3, lw=1, label="membrane")
        ax.plot(t[s > 0], m[s > 0], "r^", ms=7, label="spike")
        ax.axhline(1.0, color="k", ls=":", lw=0.8)
        ax.set(title=title, xlabel="time step")
    axes[0].legend(fontsize=7, loc="upper left")
    r.figure(fig, "resets", "One input, four conventions: SpikingJelly resets H within the step (the returned H "
                            "is pre-reset), snnTorch subtracts the threshold one step later and undecayed, Norse "
                            "records v after its reset; threshold dotted")
    # figure: measured errors
    fig, ax = plt_.subplots(figsize=(11, 4.2), layout="constrained")
    labels = [f"{x['name']}\n{x['label']}" for x in res if x["mode"] == "float64"]
    for k, mode in enumerate(MODES):
        vals = [max(x["grad"], x["membrane"], 1e-17) for x in res if x["mode"] == mode]
        ax.bar(np.arange(len(vals)) + (k - 1) * 0.27, vals, width=0.27, label=mode)
    ax.set_yscale("log")
    ax.axhline(1e-10, color="k", ls=":", lw=0.8)
    ax.set_xticks(np.arange(len(labels)), labels, rotation=35, ha="right", fontsize=6.5)
    ax.set(ylabel="max(membrane err, rel. grad err)", title="refssm preset vs the library (floor 1e-17 = exact)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    r.figure(fig, "errors", "Largest membrane or relative gradient difference per setting and mode; dotted: 1e-10")
    return r.finish(ok)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
