"""Training loop: AdamW with parameter groups, cosine schedule with warm-up, gradient clipping,
metrics (accuracy, loss, spike rate per layer, energy), atomic HDF5 checkpoints and exact resume.

Determinism: the parameters are drawn from default_rng(seed); epoch e visits the training split in
the order of default_rng([seed, 1, e]); dropout and stochastic spikes draw from one training
Generator seeded with [seed, 2], whose state is saved in every checkpoint; evaluation draws from a
fresh default_rng([seed, 3]). A run resumed from a checkpoint therefore replays exactly the steps an
uninterrupted run would have taken, and ends with the same parameters bit for bit.
"""

import os
import sys
import time

import numpy as np

from refssm import backend, checkpoint, models, ops, optim
from refssm._checks import in_range, positive_int
from refssm._memory import reuse_freed_memory

TRAIN_DEFAULTS = dict(task="digits", data_dir=None, epochs=10, batch_size=32, lr=0.01, weight_decay=0.01, ssm_lr=1e-3,
                      warmup=0.1, clip=1.0, seed=0, ckpt_every=0)
CKPT_NAME = "checkpoint.h5"


def _train_rng(seed):
    return np.random.default_rng([seed, 2])


def _epoch_rng(seed, epoch):
    return np.random.default_rng([seed, 1, epoch])


def _aux(cfg):
    if cfg.get("neuron") == "sdn":
        from refssm import sdn
        return {"sdn": sdn.load(cfg["tau"])}
    return {}


def _task(name, data_dir=None):
    """The task's Dataset (files from data_dir for tasks that read them); refssm train handles
    single-sequence classification tasks."""
    from refssm import datasets
    data = datasets.load(name, **({} if data_dir is None else {"data_dir": data_dir}))
    if data.target != "class" or data.train.lengths.ndim != 1:
        raise ValueError(f"task must be a single-sequence classification task for refssm train; "
                         f"{name!r} has target {data.target!r}")
    return data


def evaluate(params, state, cfg, split, batch_size, seed, aux=None):
    """Accuracy, mean loss, spike rate per layer and energy per example (uJ) on a dataset split."""
    from refssm.datasets import batches

    rng = np.random.default_rng([seed, 3])
    n = correct = 0
    loss_sum = 0.0
    totals = None
    for x, y, mask in batches(split, batch_size, shuffle=False):
        logits, _, _, stats = models.forward(params, state, cfg, x, mask, rng, train=False, aux=aux)
        loss, _ = ops.cross_entropy(logits, y)
        loss_sum += loss * len(y)
        correct += int(np.sum(np.argmax(logits, axis=1) == y))
        n += len(y)
        totals = stats if totals is None else [{k: a[k] + b[k] for k in a} for a, b in zip(totals, stats)]
    rates = [s["spikes"] / s["sites"] for s in totals if s["sites"] > 0]
    spikes, sites = sum(s["spikes"] for s in totals), sum(s["sites"] for s in totals)
    return dict(acc=correct / n, loss=loss_sum / n, spike_rate=spikes / sites, layer_rates=rates,
                energy_uJ=models.energy_uJ(totals) / n)


def _lr_and_decay(cfg, lr, ssm_lr, weight_decay):
    """Per-parameter base learning rate and weight decay from the models' declarations."""
    groups = models.optimizer_groups(cfg)
    base_lr = {k: (min(lr, ssm_lr) if g == "ssm" else lr) for k, (g, _) in groups.items()}
    decay = {k: (weight_decay if wd else 0.0) for k, (_, wd) in groups.items()}
    return base_lr, decay


class Progress:
    """A one-line progress bar with running loss and accuracy (plain lines when not a terminal)."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.tty = stream, stream.isatty()

    def update(self, epoch, epochs, done, total, loss, acc):
        if self.tty:
            bar = "#" * int(20 * done / total)
            self.stream.write(f"\repoch {epoch + 1}/{epochs} [{bar:<20}] {done}/{total} loss {loss:.4f} acc {acc:.3f}")
            self.stream.flush()

    def end_epoch(self, text):
        self.stream.write(f"\r{text}\033[K\n" if self.tty else f"{text}\n")
        self.stream.flush()


def _check_options(options):
    unknown = set(options) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training options {sorted(unknown)}; allowed: {sorted(TRAIN_DEFAULTS)}")
    opts = dict(TRAIN_DEFAULTS, **options)
    positive_int("epochs", opts["epochs"])
    positive_int("batch_size", opts["batch_size"])
    positive_int("seed", opts["seed"], minimum=0)
    positive_int("ckpt_every", opts["ckpt_every"], minimum=0)
    in_range("lr", opts["lr"], 0, None, lo_open=True)
    in_range("ssm_lr", opts["ssm_lr"], 0, None, lo_open=True)
    in_range("weight_decay", opts["weight_decay"], 0, None)
    in_range("warmup", opts["warmup"], 0, 1)
    in_range("clip", opts["clip"], 0, None)
    return opts


def run(model="spikingssm", out="runs/default", resume=False, stop_after=None, log=print, progress=None,
        model_overrides=None, **train_options):
    """Train `model` on `train_options["task"]`, checkpointing to `out`/checkpoint.h5.

    resume: continue from `out`/checkpoint.h5 (the model and training options are read from it).
    stop_after: stop (after checkpointing) once this many optimizer steps are done in total (used to
    test resumption; a run killed at any moment resumes from its last checkpoint the same way).
    Returns the summary dict of the final test evaluation.
    """
    reuse_freed_memory()
    path = os.path.join(out, CKPT_NAME)
    if resume:
        ckpt = checkpoint.load(path)
        opts, cfg = ckpt.config["train"], models.upgrade_config(ckpt.config["model"])
        data = _task(opts["task"], opts["data_dir"])
        params, opt_state, state, step = ckpt.params, ckpt.opt_state, ckpt.extra or {}, ckpt.step
        rng = np.random.default_rng()
        rng.bit_generator.state = ckpt.rng_state
        log(f"resumed {path} at step {step}")
    else:
        opts = _check_options(train_options)
        data = _task(opts["task"], opts["data_dir"])
        cfg = models.make_config(model, d_input=data.d_input, vocab_size=data.vocab_size,
                                 n_classes=data.n_classes, **(model_overrides or {}))
        params, state = models.init_params(cfg, np.random.default_rng(opts["seed"]))
        opt_state, step, rng = optim.adamw_init(params), 0, _train_rng(opts["seed"])
    aux = _aux(cfg)
    n_train = len(data.train)
    steps_per_epoch = -(-n_train // opts["batch_size"])
    total = opts["epochs"] * steps_per_epoch
    warmup = int(round(opts["warmup"] * total))
    base_lr, decay = _lr_and_decay(cfg, opts["lr"], opts["ssm_lr"], opts["weight_decay"])
    progress = progress or Progress()
    n_params = sum(v.size for v in params.values())
    log(f"model={cfg['model']} task={opts['task']} params={n_params} train={n_train} val={len(data.val)} "
        f"test={len(data.test)} epochs={opts['epochs']} steps={total} backend={cfg['backend']} "
        f"({backend.resolve(cfg['backend'])}) dtype={cfg['dtype']}")

    def save():
        checkpoint.save(path, params=params, opt_state=opt_state, step=step,
                        config={"model": cfg, "train": opts}, rng_state=rng.bit_generator.state, extra=state)

    from refssm.datasets import batches

    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    for epoch in range(step // steps_per_epoch, opts["epochs"]):
        seen = correct = 0
        loss_sum = 0.0
        for b, (x, y, mask) in enumerate(batches(data.train, opts["batch_size"], rng=_epoch_rng(opts["seed"], epoch))):
            if epoch * steps_per_epoch + b < step:
                continue                                                       # replayed on resume
            loss, grads, state, logits, _ = models.loss_and_grads(params, state, cfg, x, y, mask, rng, True, aux)
            if opts["clip"] > 0:
                grads, _ = optim.clip_grad_norm(grads, opts["clip"])
            scale = optim.cosine_schedule(step, total, warmup, 1.0)
            params, opt_state = optim.adamw_step(params, grads, opt_state,
                                                 lr={k: v * scale for k, v in base_lr.items()}, weight_decay=decay)
            step += 1
            seen += len(y)
            loss_sum += loss * len(y)
            correct += int(np.sum(np.argmax(logits, axis=1) == y))
            progress.update(epoch, opts["epochs"], b + 1, steps_per_epoch, loss_sum / seen, correct / seen)
            if (opts["ckpt_every"] and step % opts["ckpt_every"] == 0) or step == stop_after:
                save()
            if step == stop_after:
                log(f"stopped after step {step}; resume with --resume")
                return None
        save()
        val = evaluate(params, state, cfg, data.val, 256, opts["seed"], aux)
        progress.end_epoch(f"epoch {epoch + 1}/{opts['epochs']} train_loss {loss_sum / max(seen, 1):.4f} "
                           f"train_acc {correct / max(seen, 1):.3f} val_acc {val['acc']:.3f} "
                           f"spike_rate {val['spike_rate']:.3f} ({time.time() - t0:.0f}s)")
    test = evaluate(params, state, cfg, data.test, 256, opts["seed"], aux)
    summary = dict(model=cfg["model"], task=opts["task"], test_acc=test["acc"], test_loss=test["loss"],
                   spike_rate=test["spike_rate"], energy_uJ=test["energy_uJ"], steps=step,
                   seconds=time.time() - t0, checkpoint=path)
    log("spike rate per layer: " + " ".join(f"{r:.3f}" for r in test["layer_rates"]))
    log(format_summary(summary))
    return summary


def format_summary(summary):
    """One line of key=value pairs (floats to 4 significant digits) for scripts to parse."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items())


# --------------------------------------------------------------------------------------------------
# Command line: refssm train / eval / info
# --------------------------------------------------------------------------------------------------

# model options settable from the command line: flag -> (config key, type)
_MODEL_FLAGS = {"H": int, "N": int, "layers": int, "dropout": float, "norm": str, "backend": str, "dtype": str,
                "neuron": str, "lif_gradient": str, "reset": str, "surrogate": str, "mixing": str, "alpha": float,
                "frac_method": str, "tau": float}
_FLAG_CHOICES = {"backend": backend.BACKENDS, "dtype": backend.DTYPES}


def _cmd_train(args):
    overrides = {("n_layers" if k == "layers" else k): getattr(args, k) for k in _MODEL_FLAGS
                 if getattr(args, k) is not None}
    for flag in ("bidirectional", "prenorm", "postnorm_bug"):
        if getattr(args, flag):
            overrides[flag] = True
    options = {k: getattr(args, k) for k in TRAIN_DEFAULTS if getattr(args, k) is not None}
    summary = run(args.model, args.out, resume=args.resume, stop_after=args.stop_after,
                  model_overrides=overrides, **({} if args.resume else options))
    return 0 if summary is not None or args.stop_after else 1


def _cmd_eval(args):
    ckpt = checkpoint.load(args.checkpoint)
    cfg, opts = models.upgrade_config(ckpt.config["model"]), ckpt.config["train"]
    data = _task(opts["task"], opts["data_dir"])
    test = evaluate(ckpt.params, ckpt.extra or {}, cfg, getattr(data, args.split), 256, opts["seed"], _aux(cfg))
    print("spike rate per layer: " + " ".join(f"{r:.3f}" for r in test["layer_rates"]))
    print(format_summary(dict(model=cfg["model"], task=opts["task"], split=args.split, acc=test["acc"],
                              loss=test["loss"], spike_rate=test["spike_rate"], energy_uJ=test["energy_uJ"],
                              step=ckpt.step)))
    return 0


def _cmd_info(args):
    ckpt = checkpoint.load(args.checkpoint)
    print(f"checkpoint {args.checkpoint}: format_version={ckpt.format_version} "
          f"refssm_version={ckpt.refssm_version} step={ckpt.step}")
    for section in ("model", "train"):
        print(f"{section}: " + " ".join(f"{k}={v}" for k, v in ckpt.config[section].items()))
    print(f"parameters: {sum(v.size for v in ckpt.params.values())} in {len(ckpt.params)} arrays")
    for name, v in ckpt.params.items():
        print(f"  {name:32s} {str(v.shape):14s} |x|max={np.abs(v).max():.3g}")
    return 0


def add_parser(sub):
    p = sub.add_parser("train", help="train a spiking SSM and report accuracy, spike rate and energy")
    p.add_argument("--model", choices=models.MODELS, default="spikingssm")
    p.add_argument("--out", default="runs/default", help="directory for checkpoint.h5 (default runs/default)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many optimizer steps in total")
    for k, v in TRAIN_DEFAULTS.items():
        p.add_argument("--" + k.replace("_", "-"), type=str if v is None else type(v), default=None,
                       help=f"default {v}")
    for k, t in _MODEL_FLAGS.items():
        default = models.COMMON.get(k)
        p.add_argument("--" + k.replace("_", "-"), type=t, default=None, choices=_FLAG_CHOICES.get(k),
                       help="model option" + (f" (default {default})" if default is not None else
                                              " (defaults per model: refssm.models.MODEL_DEFAULTS)"))
    for flag in ("bidirectional", "prenorm", "postnorm-bug"):
        p.add_argument("--" + flag, action="store_true")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("eval", help="evaluate a checkpoint on its task's test split")
    p.add_argument("checkpoint")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.set_defaults(func=_cmd_eval)
    p = sub.add_parser("info", help="print a checkpoint's configuration and parameters")
    p.add_argument("checkpoint")
    p.set_defaults(func=_cmd_info)
