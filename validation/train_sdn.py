"""Train the SpikingSSM Surrogate Dynamic Network with refssm and check it against the exact LIF.

Reproduces the shipped weights refssm/sdn_tau0.125.npz from a seed:

    python validation/train_sdn.py                      # train (about a minute on one core), evaluate, write
    python validation/train_sdn.py --out /tmp/w.npz     # same, written elsewhere (e.g. to compare)
    python validation/train_sdn.py --evaluate-only      # evaluate the shipped file only

Recipe (reference notes A2.3) and its deviations from the paper:
  data    i.i.d. N(0, 1) currents; target m_t = tau u_{t-1} from the exact hard-reset LIF (v_th = 1)
          16384 sequences of length 256 (paper: 1e5 x 1024; code: 45,000 x 1024 after the val split)
  loss    SmoothL1 (beta = 1), as the paper's code (the paper text says MSE)
  optim   AdamW, lr 0.01, weight decay 0.01, cosine annealing to 0 over all steps (as the code)
          50 epochs of batch 16 = 51,200 steps (paper: 100 epochs of batch 64)
  model   the fused (deployed) 153-parameter form is trained directly; the paper trains a 193-parameter
          form with a separate encoder and BatchNorm and folds them afterwards. At inference both span
          the same functions.
Evaluation (reference notes A2.4): spike accuracy and MAE of m_hat on fresh N(0, 1) sequences
(200 x 1024, a seed disjoint from training), at input std 0.5 / 1 / 2, and against mismatched tau.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from refssm import sdn


def evaluate(params, tau, n=200, L=1024, seed=12345):
    """The A2.4 table for `params`: a dict of metrics on fresh Gaussian sequences."""
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((n, L))
    m, s = sdn.lif_target(y, tau)
    s_hat, _ = sdn.sdn_spikes(y, params)
    m_hat = sdn.predict(y, params)
    errors = s_hat != s
    out = {
        "tau": tau, "n": n, "L": L, "eval_seed": seed,
        "spike_accuracy": float(1 - errors.mean()),
        "mem_mae": float(np.abs(m_hat - m).mean()),
        "mem_max_abs_err": float(np.abs(m_hat - m).max()),
        "spike_errors": int(errors.sum()),
        "sequences_with_an_error": float(errors.any(axis=-1).mean()),
        "firing_rate": float(s.mean()),
        "zero_input_output": float(sdn.predict(np.zeros(16), params)[-1]),
    }
    z = m + y - 1                                                   # exact distance to threshold
    out["median_abs_exact_z_at_errors"] = float(np.median(np.abs(z[errors]))) if errors.any() else None
    for std in (0.5, 2.0):
        ys = std * rng.standard_normal((n, L))
        out[f"spike_accuracy_std{std:g}"] = sdn.spike_accuracy(params, tau, ys)
    for t in (0.1, 0.12, 0.13, 0.2):
        out[f"spike_accuracy_if_true_tau_{t:g}"] = sdn.spike_accuracy(params, t, y)
    imp = np.zeros(16)
    imp[4] = 0.5
    r = sdn.predict(imp, params) - sdn.predict(np.zeros(16), params)
    out["impulse_0.5_response_t+1_t+2"] = [float(r[5]), float(r[6])]   # exact: 0.0625, 0.0078125
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tau", type=float, default=0.125)
    ap.add_argument("--n-train", type=int, default=16384)
    ap.add_argument("--L", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None,
                    help="where to write the weights (default: refssm/sdn_tau<tau>.npz, the shipped file)")
    ap.add_argument("--report", type=Path, default=None, help="also write the metrics as JSON here")
    ap.add_argument("--evaluate-only", action="store_true", help="evaluate the shipped weights, train nothing")
    a = ap.parse_args(argv)

    if a.evaluate_only:
        params = sdn.load(a.tau)
        report = {"weights": "shipped"}
    else:
        t0 = time.time()
        history = []

        def log(r):
            print(f"epoch {r['epoch']:3d}  train SmoothL1 {r['loss']:.3e}  lr {r['lr']:.2e}  "
                  f"{time.time() - t0:6.1f} s", flush=True)

        params = sdn.train(a.tau, a.n_train, a.L, a.epochs, a.batch, a.lr, a.seed,
                           weight_decay=a.weight_decay, history=history, log=log)
        seconds = time.time() - t0
        out = a.out or Path(sdn.__file__).with_name(f"sdn_tau{a.tau:g}.npz")
        sdn.save(out, params)
        print(f"trained in {seconds:.1f} s; wrote {out}")
        report = {"weights": str(out), "train_seconds": seconds,
                  "recipe": {k: getattr(a, k) for k in ("tau", "n_train", "L", "epochs", "batch", "lr",
                                                         "weight_decay", "seed")},
                  "train_loss_per_epoch": [r["loss"] for r in history]}
        try:
            shipped = sdn.load(a.tau)
            if out.resolve() != Path(sdn.__file__).with_name(f"sdn_tau{a.tau:g}.npz").resolve():
                diff = max(float(np.max(np.abs(params[k] - shipped[k]))) for k in sdn.SHAPES)
                report["max_abs_diff_vs_shipped"] = diff
                print(f"max |w - shipped| = {diff:.3g}")
        except (ValueError, FileNotFoundError):
            pass
    report["n_params"] = sum(v.size for v in params.values())
    report["eval"] = evaluate(params, a.tau)
    print(json.dumps(report["eval"], indent=1))
    if a.report:
        a.report.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
