"""Training loop: AdamW with parameter groups, cosine schedule with warm-up, gradient clipping,
metrics (loss, accuracy, perplexity, spike rate per layer, energy), atomic HDF5 checkpoints, the best
checkpoint on validation kept beside the last one, a metrics log, and exact resume.

The task decides the head (refssm.models.HEADS): class targets train a classifier (token pairs: the
retrieval dual encoder), "sequence" targets the per-step readout, "value" targets a regression, "lm"
targets a causal language model (LayerNorm pre-norm, causal kernel: the papers' LM setting).

Determinism: the parameters are drawn from default_rng(seed); epoch e visits the training split in
the order of default_rng([seed, 1, e]); dropout and stochastic spikes draw from one training
Generator seeded with [seed, 2], whose state is saved in every checkpoint; evaluation draws from a
fresh default_rng([seed, 3]). A run resumed from a checkpoint therefore replays exactly the steps an
uninterrupted run would have taken, and ends with the same parameters bit for bit.

Data parallel (refssm.distributed): under `mpiexec -n K` (or srun) every rank iterates the same global
batches and takes a contiguous shard of each (the first B % K ranks one example more); its loss is weighted
by the shard's share of the batch's scored positions (examples; tokens for "lm") before the backward, so
the K shards' gradients sum to the gradient of the global batch's mean loss. The gradients are summed on
one contiguous buffer per step, in the training dtype, in rank order (distributed.Comm.sum), so every rank
takes the same AdamW step; BatchNorm's training statistics and their backward are those of the global
batch; losses, accuracies and spike counts are summed; dropout and stochastic spikes come from per-example
noise keyed by the example's index in the global batch (models.layers.Noise). Rank 0 alone prints and
writes checkpoints and metrics.jsonl; the checkpoint holds global state only, so any K resumes it. At
K = 1 the same code runs with sums that return their argument.

A run directory holds checkpoint.h5 (the last), best.h5 (the best on validation), metrics.jsonl (one
JSON object per step and per epoch) and, after `refssm plot`, curves.png.

Devices: parameters, optimizer state and BatchNorm state live on the device of cfg["backend"] (the GPU for
"cupy", refssm.backend) for the whole run; each batch is moved there by models.forward; checkpoints and
metrics are written from host copies, so a checkpoint is the same file whatever the backend, and a run
saved on a GPU resumes on the CPU and the reverse (`--resume --backend ...`; resuming on another backend
continues the run exactly as configured, up to that backend's rounding).
"""

import json
import math
import os
import sys
import time

import numpy as np

from refssm import backend, checkpoint, distributed, models, optim
from refssm._checks import in_range, positive_int
from refssm._memory import reuse_freed_memory

TRAIN_DEFAULTS = dict(task="digits", data_dir=None, task_options=None, epochs=10, batch_size=32, lr=0.01, weight_decay=0.01, ssm_lr=1e-3,
                      warmup=0.1, clip=1.0, seed=0, ckpt_every=0)
CKPT_NAME, BEST_NAME, METRICS_NAME = "checkpoint.h5", "best.h5", "metrics.jsonl"
STAT_KEYS = ("spikes", "sites", "ac", "mac")        # models.forward's per-layer counts
# model options a head needs unless the user sets them (the papers' LM configuration, reference notes A3.4)
HEAD_DEFAULTS = {"lm": dict(norm="layer", prenorm=True, bidirectional=False)}


def _train_rng(seed):
    return np.random.default_rng([seed, 2])


def _epoch_rng(seed, epoch):
    return np.random.default_rng([seed, 1, epoch])


def _aux(cfg):
    if cfg.get("neuron") == "sdn":
        from refssm import sdn
        return {"sdn": sdn.load(cfg["tau"])}
    return {}


def _task(name, data_dir=None, options=None):
    """The task's Dataset (files from data_dir for tasks that read them; options: the task's own keyword
    options, e.g. {"length": 50} for "adding", as `refssm data list` shows them)."""
    from refssm import datasets
    return datasets.load(name, **({} if data_dir is None else {"data_dir": data_dir}), **(options or {}))


def head_of(data):
    """(head, n_targets) for a dataset: its target kind decides the head (module doc)."""
    if data.target == "class":
        return ("retrieval" if data.train.lengths.ndim == 2 else "class"), 1
    if data.target == "sequence":
        return "sequence", int(data.train.y.shape[1])
    return data.target, 1


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------

def _hits(cfg, outputs, y, mask):
    """(correct, counted) predictions of one batch: argmax over classes at every scored position."""
    if cfg["head"] == "value":
        return 0, 0
    pred = np.argmax(backend.to_host(outputs), axis=1)
    if cfg["head"] == "lm":
        return int(np.sum((pred == y) & mask)), int(mask.sum())
    return int(np.sum(pred == y)), int(pred.size)


def _weight(cfg, y, mask):
    """How many scored positions a batch's loss averages over (to average losses over batches)."""
    return int(mask.sum()) if cfg["head"] == "lm" else len(y)


def summarize(cfg, loss, correct, counted):
    """The head's metrics from a mean loss: accuracy; for LMs perplexity and bits per token."""
    out = dict(loss=loss)
    if counted:
        out["acc"] = correct / counted
    if cfg["head"] == "lm":
        out["ppl"], out["bits_per_token"] = math.exp(min(loss, 700.0)), loss / math.log(2)
    return out


def evaluate(params, state, cfg, split, batch_size, seed, aux=None, comm=None):
    """The head's metrics (loss, acc, ...), spike rate per layer and energy per example (uJ) on a split.

    comm (refssm.distributed, default this process alone): each rank evaluates its shard of every batch,
    with the examples' indices in the batch as noise ids, and the sums are added over ranks.
    """
    from refssm.datasets import batches

    comm = comm or distributed.Local()
    rng = np.random.default_rng([seed, 3])
    sums = None              # loss * weight, weight, examples, correct, counted, then STAT_KEYS per layer
    for x, y, mask in batches(split, batch_size, shuffle=False):
        lo, hi = comm.shard(len(y))
        empty = lo == hi     # fewer examples than ranks: evaluate one and discard it, so that every rank
        if empty:            # draws the batch's noise key from rng (models.forward draws one per call)
            lo, hi = 0, 1
        y_r, mask_r = y[lo:hi], mask[lo:hi]
        outputs, _, _, stats = models.forward(params, state, cfg, x[lo:hi], mask_r, rng, train=False, aux=aux,
                                              example_ids=np.arange(lo, hi))
        loss, _ = models.loss(cfg, outputs, y_r, mask_r)
        w = _weight(cfg, y_r, mask_r)
        row = np.array([loss * w, w, hi - lo, *_hits(cfg, outputs, y_r, mask_r)]
                       + [s[k] for s in stats for k in STAT_KEYS], dtype=np.float64)
        if empty:
            row[:] = 0.0
        sums = row if sums is None else sums + row
    sums = comm.sum(sums)
    loss_sum, weight, n, correct, counted = sums[0], sums[1], int(sums[2]), int(sums[3]), int(sums[4])
    totals = [dict(zip(STAT_KEYS, map(float, layer))) for layer in sums[5:].reshape(-1, len(STAT_KEYS))]
    rates = [s["spikes"] / s["sites"] for s in totals if s["sites"] > 0]
    spikes, sites = sum(s["spikes"] for s in totals), sum(s["sites"] for s in totals)
    return dict(summarize(cfg, float(loss_sum / weight), correct, counted), spike_rate=spikes / sites,
                layer_rates=rates, energy_uJ=models.energy_uJ(totals) / n)


def _better(cfg, new, old):
    """Is validation result `new` better than `old` (accuracy where there is one, else lower loss)?"""
    if old is None:
        return True
    return new["acc"] > old["acc"] if "acc" in new else new["loss"] < old["loss"]


def _lr_and_decay(cfg, lr, ssm_lr, weight_decay):
    """Per-parameter base learning rate and weight decay from the models' declarations."""
    groups = models.optimizer_groups(cfg)
    base_lr = {k: (min(lr, ssm_lr) if g == "ssm" else lr) for k, (g, _) in groups.items()}
    decay = {k: (weight_decay if wd else 0.0) for k, (_, wd) in groups.items()}
    return base_lr, decay


class Progress:
    """A one-line progress bar on a terminal (stderr) with running loss, accuracy, examples/s and ETA."""

    def __init__(self, stream=sys.stderr, show=True):
        self.stream, self.tty = stream, show and stream.isatty()

    def update(self, epoch, epochs, done, total, metrics, rate, eta):
        if self.tty:
            bar = "#" * int(20 * done / total)
            acc = f" acc {metrics['acc']:.3f}" if "acc" in metrics else ""
            self.stream.write(f"\repoch {epoch + 1}/{epochs} [{bar:<20}] {done}/{total} loss {metrics['loss']:.4f}"
                              f"{acc} {rate:.0f} ex/s ETA {_hms(eta)}\033[K")
            self.stream.flush()

    def clear(self):
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _hms(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _check_options(options):
    unknown = set(options) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training options {sorted(unknown)}; allowed: {sorted(TRAIN_DEFAULTS)}")
    opts = dict(TRAIN_DEFAULTS, **options)
    if opts["task_options"] is not None and not isinstance(opts["task_options"], dict):
        raise ValueError(f"task_options must be a dict of the task's options, got {opts['task_options']!r}")
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


def _silent(*args, **kwargs):
    """The `log` of ranks other than 0."""


def _check_shards(n_train, batch_size, ranks):
    """Every rank needs at least one example of every global batch (BatchNorm's statistics and the noise
    keys are collective): the batch size and the last, partial batch must be 0 or >= the number of ranks."""
    last = n_train % batch_size
    if batch_size < ranks or 0 < last < ranks:
        small = f"batches of {batch_size}" if batch_size < ranks else f"a last batch of {last}"
        raise ValueError(f"batch_size must give each of the {ranks} ranks an example of every batch: batch_size "
                         f"{batch_size} with {n_train} training examples makes {small} example(s); choose a batch "
                         f"size >= {ranks} with n_train % batch_size = 0 or >= {ranks}")


def global_batch_grads(params, state, cfg, x, y, mask, rng, aux, comm):
    """The training step's loss and gradients of one global batch (x, y, mask), computed on this rank's
    shard and summed over the ranks of `comm` (module doc: Data parallel).

    The shard's loss is weighted by share = its scored positions / the batch's, and that weight scales
    the loss's cotangent before the backward, not the gradients after it: synchronised BatchNorm's backward
    mixes every rank's cotangents, so they must be those of one loss, the batch's mean. The gradients go
    over the ranks as one contiguous buffer in the training dtype (distributed.Comm.sum: rank order).
    At K = 1, share = 1.0 and the sums return their argument: models.loss_and_grads bit for bit.
    -> (loss of the batch, summed gradients, new BatchNorm state, correct, counted, spike rate per layer).
    """
    lo, hi = comm.shard(len(y))
    y_r, mask_r = y[lo:hi], None if mask is None else mask[lo:hi]
    share = _weight(cfg, y_r, mask_r) / _weight(cfg, y, mask)
    if comm.size > 1:
        aux = dict(aux or {}, allreduce=comm.sum)                              # BatchNorm over the global batch
    outputs, cache, state, stats = models.forward(params, state, cfg, x[lo:hi], mask_r, rng, True, aux,
                                                  np.arange(lo, hi))           # noise ids: places in the batch
    loss, ctx = models.loss(cfg, outputs, y_r, mask_r)
    grads = models.backward(params, cfg, cache, share * models.loss_vjp(cfg, ctx))
    if comm.size > 1:
        grads = distributed.unflatten(comm.sum(distributed.flatten(grads, np.dtype(cfg["dtype"]))), grads)
    sums = comm.sum(np.array([loss * share, *_hits(cfg, outputs, y_r, mask_r)]
                             + [s[k] for s in stats for k in ("spikes", "sites")], dtype=np.float64))
    rates = [spikes / sites for spikes, sites in sums[3:].reshape(-1, 2) if sites]
    return float(sums[0]), grads, state, int(sums[1]), int(sums[2]), rates


# Threads of a single process. A step on small activations (the README's digits: 32 x 64 x 64 values) spends
# its time in the fork-join of parallel loops and BLAS threads, and on a loaded machine two threads that wait
# for each other are several times slower than one (measured: 0.06 s against 0.25 s per digits step with
# another job running; the canonical step, 16 x 128 x 1024, gains from both cores). REFSSM_THREADS overrides.
SMALL_ACTIVATION = 2**20


def threads_for(activation_size):
    """Threads for one process whose activations hold `activation_size` values (B H L): 1 below
    SMALL_ACTIVATION, else every usable core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if activation_size < SMALL_ACTIVATION else cores


# options a resumed run may change: more epochs extend the cosine schedule from where it stands; the model's
# backend is where it runs (a run saved on a GPU resumes on the CPU and the reverse)
RESUMABLE = ("epochs",)
RESUMABLE_MODEL = ("backend",)


def _on(tree, where):
    """A dict of arrays (nested dicts allowed; other leaves kept) on the device of backend `where`."""
    return {k: _on(v, where) if isinstance(v, dict) else
            backend.to_device(v, where) if hasattr(v, "shape") and hasattr(v, "dtype") and v.ndim else v
            for k, v in tree.items()}


def _host(tree):
    """The same tree with every array on the host (checkpoints, digests)."""
    return {k: _host(v) if isinstance(v, dict) else backend.to_host(v) if hasattr(v, "shape") and
            hasattr(v, "dtype") and v.ndim else v for k, v in tree.items()}


def _resume_conflicts(saved_cfg, saved_opts, model, model_overrides, options):
    """Flags given with --resume that contradict the saved run -> a clear error; `epochs` may grow."""
    bad = []
    if model is not None and model != saved_cfg["model"]:
        bad.append(f"model={model!r} (the run is {saved_cfg['model']!r})")
    for k, v in (model_overrides or {}).items():
        if k not in RESUMABLE_MODEL and saved_cfg.get(k) != v:
            bad.append(f"{k}={v!r} (the run has {saved_cfg.get(k)!r})")
    for k, v in options.items():
        if k == "epochs" and v >= saved_opts["epochs"]:
            continue
        if saved_opts.get(k) != v:
            bad.append(f"{k}={v!r} (the run has {saved_opts.get(k)!r})")
    if bad:
        raise ValueError("--resume continues a run as it was configured; these flags contradict it: "
                         + ", ".join(bad) + ". Only --epochs may grow; start a new run with another --out instead")


def run(model="spikingssm", out=None, resume=False, force=False, stop_after=None, log=print, progress=None,
        model_overrides=None, comm=None, dist_timeout=None, **train_options):
    """Train `model` on `train_options["task"]`, checkpointing to `out`/checkpoint.h5.

    out: the run directory (default runs/<model>-<task>). A directory that already holds a run is never
    overwritten unless force=True; resume=True continues it instead (the model and training options
    are read from its checkpoint; a flag that contradicts them is an error, except more epochs).
    stop_after: stop (after checkpointing) once this many optimizer steps are done in total.
    Ctrl-C saves a checkpoint and says how to resume. Returns the summary dict of the final test
    evaluation (None when stopped early).
    comm: the data-parallel communicator (module doc), default distributed.world(dist_timeout): the ranks
    of mpiexec/srun, else this process alone. dist_timeout: seconds a rank waits for the others in one
    collective before it ends the job (default distributed.DEFAULT_TIMEOUT).
    """
    reuse_freed_memory()
    comm = comm or distributed.world(distributed.DEFAULT_TIMEOUT if dist_timeout is None else dist_timeout)
    if comm.rank != 0:
        log = _silent                                                          # rank 0 alone prints
    if resume:
        if out is None:
            out = os.path.join("runs", f"{model or 'spikingssm'}-{train_options.get('task', TRAIN_DEFAULTS['task'])}")
        path = os.path.join(out, CKPT_NAME)
        ckpt = checkpoint.load(path)
        opts, cfg = ckpt.config["train"], models.upgrade_config(ckpt.config["model"])
        _resume_conflicts(cfg, opts, model, model_overrides, train_options)
        opts = dict(opts, **{k: v for k, v in train_options.items() if k in RESUMABLE})
        cfg.update({k: v for k, v in (model_overrides or {}).items() if k in RESUMABLE_MODEL})
        try:
            backend.resolve(cfg["backend"])
        except ValueError as e:                                                # e.g. a GPU run resumed on a CPU
            raise ValueError(f"{e}; the run was trained with backend {cfg['backend']!r}: continue it here with "
                             f"--resume --backend auto") from None
        data = _task(opts["task"], opts["data_dir"], opts.get("task_options"))
        params, opt_state, state, step = ckpt.params, ckpt.opt_state, ckpt.extra or {}, ckpt.step
        rng = np.random.default_rng()
        rng.bit_generator.state = ckpt.rng_state
        best = ckpt.config.get("best")
        log(f"resumed {path} at step {step}")
    else:
        model = model or "spikingssm"
        opts = _check_options(train_options)
        out = out or os.path.join("runs", f"{model}-{opts['task']}")
        path = os.path.join(out, CKPT_NAME)
        if os.path.exists(path) and not force:
            raise ValueError(f"--out {out} already holds a run ({CKPT_NAME}); continue it with --resume, "
                             f"overwrite it with --force, or choose another --out")
        data = _task(opts["task"], opts["data_dir"], opts.get("task_options"))
        head, n_targets = head_of(data)
        overrides = dict(HEAD_DEFAULTS.get(head, {}), head=head, n_targets=n_targets, **(model_overrides or {}))
        cfg = models.make_config(model, d_input=data.d_input, vocab_size=data.vocab_size,
                                 n_classes=data.n_classes, **overrides)
        params, state = models.init_params(cfg, np.random.default_rng(opts["seed"]))
        opt_state, step, rng, best = optim.adamw_init(params), 0, _train_rng(opts["seed"]), None
        if force and comm.rank == 0 and os.path.isdir(out):
            for name in (CKPT_NAME, BEST_NAME, METRICS_NAME, "curves.png"):
                if os.path.exists(os.path.join(out, name)):
                    os.remove(os.path.join(out, name))
    aux = _aux(cfg)
    n_train = len(data.train)
    concrete = backend.resolve(cfg["backend"])
    if backend.device_of(concrete) == "gpu" and comm.size > 1:
        raise ValueError("backend 'cupy' trains on one GPU: data parallelism across GPUs (NCCL) is not implemented "
                         "yet; run one process, or a CPU backend under mpiexec")
    params, opt_state, state = _on(params, concrete), _on(opt_state, concrete), _on(state, concrete)
    if comm.size > 1:
        _check_shards(n_train, opts["batch_size"], comm.size)
    elif comm.threads is None:
        comm.threads = distributed.set_threads(threads_for(opts["batch_size"] * cfg["H"] * data.train.steps))
    steps_per_epoch = -(-n_train // opts["batch_size"])
    total = opts["epochs"] * steps_per_epoch
    warmup = int(round(opts["warmup"] * total))
    base_lr, decay = _lr_and_decay(cfg, opts["lr"], opts["ssm_lr"], opts["weight_decay"])
    progress = progress or Progress(show=comm.rank == 0)
    n_params = sum(v.size for v in params.values())
    log(f"model={cfg['model']} task={opts['task']} head={cfg['head']} params={n_params} train={n_train} "
        f"val={len(data.val)} test={len(data.test)} epochs={opts['epochs']} steps={total} "
        f"backend={cfg['backend']} ({concrete}) dtype={cfg['dtype']} out={out}")
    if comm.size > 1:
        log(f"data parallel: {comm.size} ranks ({comm.name}), {comm.threads} threads each, global batch "
            f"{opts['batch_size']}, collective timeout {comm.timeout:g} s")
    comm.hint = f"; resume from the last checkpoint with: refssm train --resume --out {out} (any number of ranks)"
    comm.check_same(distributed.digest(np.int64(step), *_host(params).values()), "parameters at the start")
    os.makedirs(out, exist_ok=True)
    metrics_log = open(os.path.join(out, METRICS_NAME), "a") if comm.rank == 0 else None

    def save(where=path, check=True):
        if check:                                   # a collective: every rank saves at the same steps
            comm.check_same(distributed.digest(np.int64(step), *_host(params).values()), f"parameters at step {step}")
        if comm.rank == 0:
            checkpoint.save(where, params=_host(params), opt_state=_host(opt_state), step=step,
                            config={"model": cfg, "train": opts, "best": best}, rng_state=rng.bit_generator.state,
                            extra=_host(state))

    def record(entry):
        if metrics_log is not None:
            metrics_log.write(json.dumps(entry) + "\n")
            metrics_log.flush()

    from refssm.datasets import batches

    t0 = time.time()
    step0 = step
    try:
        for epoch in range(step // steps_per_epoch, opts["epochs"]):
            weight = correct = counted = 0
            loss_sum = 0.0
            for b, (x, y, mask) in enumerate(batches(data.train, opts["batch_size"],
                                                     rng=_epoch_rng(opts["seed"], epoch))):
                if epoch * steps_per_epoch + b < step:
                    continue                                                   # replayed on resume
                t_step = time.time()
                comm.where = f"step {step + 1}"
                loss, grads, state, c, k, layer_rates = global_batch_grads(params, state, cfg, x, y, mask, rng, aux,
                                                                           comm)
                if opts["clip"] > 0:
                    grads, _ = optim.clip_grad_norm(grads, opts["clip"])
                scale = optim.cosine_schedule(step, total, warmup, 1.0)
                params, opt_state = optim.adamw_step(params, grads, opt_state,
                                                     lr={k: v * scale for k, v in base_lr.items()}, weight_decay=decay)
                step += 1
                w = _weight(cfg, y, mask)
                loss_sum, weight = loss_sum + loss * w, weight + w
                correct, counted = correct + c, counted + k
                running = summarize(cfg, loss_sum / weight, correct, counted)
                record(dict(step=step, epoch=epoch + 1, loss=loss, **({"acc": c / k} if k else {}),
                            lr=opts["lr"] * scale, spike_rate=[float(r) for r in layer_rates],
                            seconds=time.time() - t_step))
                elapsed = time.time() - t0
                rate = (step - step0) * opts["batch_size"] / max(elapsed, 1e-9)
                progress.update(epoch, opts["epochs"], b + 1, steps_per_epoch, running,
                                rate, (total - step) * opts["batch_size"] / max(rate, 1e-9))
                if (opts["ckpt_every"] and step % opts["ckpt_every"] == 0) or step == stop_after:
                    save()
                if step == stop_after:
                    progress.clear()
                    log(f"stopped after step {step}; resume with: refssm train --resume --out {out}")
                    return None
            comm.where = f"validation after epoch {epoch + 1}"
            val = evaluate(params, state, cfg, data.val, 256, opts["seed"], aux, comm)
            if _better(cfg, val, best):
                best = dict(epoch=epoch + 1, **{k: v for k, v in val.items() if k in ("acc", "loss")})
                save(os.path.join(out, BEST_NAME))
            save()
            progress.clear()
            record(dict(step=step, epoch=epoch + 1, **{"val_" + k: v for k, v in val.items()}))
            train_metrics = summarize(cfg, loss_sum / max(weight, 1), correct, counted)
            log(f"epoch {epoch + 1}/{opts['epochs']} "
                + " ".join(f"train_{k} {v:.4f}" for k, v in train_metrics.items() if k in ("loss", "acc"))
                + " " + " ".join(f"val_{k} {v:.4f}" for k, v in val.items() if k in ("loss", "acc", "ppl"))
                + f" spike_rate {val['spike_rate']:.3f} ({time.time() - t0:.0f}s)")
    except KeyboardInterrupt:
        progress.clear()
        save(check=False)                           # no collective: the ranks were interrupted anywhere
        log(f"interrupted at step {step}: checkpoint saved to {path}; resume with: refssm train --resume --out {out}")
        raise
    except Exception as e:
        if comm.size > 1:                           # end every rank now, not after the others' timeout
            comm.fail(f"rank {comm.rank} of {comm.size}: {type(e).__name__}: {e} (at {comm.where}){comm.hint}")
        raise
    finally:
        if metrics_log is not None:
            metrics_log.close()
    used = "last"
    comm.where = "test evaluation"
    comm.barrier()                                  # rank 0 has written best.h5 before any rank reads it
    if best is not None and os.path.exists(os.path.join(out, BEST_NAME)):
        ckpt_best = checkpoint.load(os.path.join(out, BEST_NAME))
        params, state = _on(ckpt_best.params, concrete), _on(ckpt_best.extra or {}, concrete)
        used = f"best (epoch {best['epoch']})"
    test = evaluate(params, state, cfg, data.test, 256, opts["seed"], aux, comm)
    summary = dict(model=cfg["model"], task=opts["task"], **{"test_" + k: v for k, v in test.items()
                                                            if k not in ("layer_rates", "spike_rate", "energy_uJ")},
                   spike_rate=test["spike_rate"], energy_uJ=test["energy_uJ"], steps=step,
                   seconds=time.time() - t0, checkpoint=os.path.join(out, BEST_NAME if used != "last" else CKPT_NAME),
                   evaluated=used.split()[0])
    log("spike rate per layer: " + " ".join(f"{r:.3f}" for r in test["layer_rates"]))
    log(f"test metrics from the {used} checkpoint")
    log(format_summary(summary))
    return summary


def format_summary(summary):
    """One line of key=value pairs (floats to 4 significant digits) for scripts to parse."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items())


# --------------------------------------------------------------------------------------------------
# Command line: refssm train / eval / info / plot
# --------------------------------------------------------------------------------------------------

# model options settable from the command line: flag -> (config key, type)
_MODEL_FLAGS = {"H": int, "N": int, "layers": int, "dropout": float, "norm": str, "backend": str, "dtype": str,
                "neuron": str, "lif_gradient": str, "reset": str, "surrogate": str, "mixing": str, "alpha": float,
                "frac_method": str, "tau": float}


def _flag(key):
    return "--" + ("layers" if key == "n_layers" else key).replace("_", "-")


def _as_flag_error(err, keys):
    """A ValueError about option `key` ("epochs must be ...") reworded for the flag ("--epochs must be ...")."""
    msg = str(err)
    for key in sorted(keys, key=len, reverse=True):
        if msg.startswith(key + " "):
            return ValueError(_flag(key) + msg[len(key):])
    return err


def _cmd_train(args):
    overrides = {("n_layers" if k == "layers" else k): getattr(args, k) for k in _MODEL_FLAGS
                 if getattr(args, k) is not None}
    for flag in ("bidirectional", "prenorm", "postnorm_bug"):
        if getattr(args, flag):
            overrides[flag] = True
    if args.causal:
        overrides["bidirectional"] = False
    options = {k: getattr(args, k) for k in TRAIN_DEFAULTS if getattr(args, k, None) is not None}
    if args.task_option:
        from refssm.datasets.cli import parse_options
        options["task_options"] = parse_options(args.task_option)
    try:
        summary = run(args.model, args.out, resume=args.resume, force=args.force, stop_after=args.stop_after,
                      model_overrides=overrides, dist_timeout=args.dist_timeout, **options)
    except ValueError as e:
        raise _as_flag_error(e, list(TRAIN_DEFAULTS) + list(overrides) + ["model", "dist_timeout"]) from None
    return 0 if summary is not None or args.stop_after else 1


def _cmd_eval(args):
    ckpt = checkpoint.load(args.checkpoint)
    cfg, opts = models.upgrade_config(ckpt.config["model"]), ckpt.config["train"]
    if args.backend is not None:
        cfg["backend"] = args.backend
    data = _task(opts["task"], opts["data_dir"], opts.get("task_options"))
    res = evaluate(ckpt.params, ckpt.extra or {}, cfg, getattr(data, args.split), 256, opts["seed"], _aux(cfg))
    print("spike rate per layer: " + " ".join(f"{r:.3f}" for r in res["layer_rates"]))
    print(format_summary(dict(model=cfg["model"], task=opts["task"], split=args.split,
                              **{k: v for k, v in res.items() if k != "layer_rates"}, step=ckpt.step)))
    return 0


def _cmd_info(args):
    ckpt = checkpoint.load(args.checkpoint)
    print(f"checkpoint {args.checkpoint}: format_version={ckpt.format_version} "
          f"refssm_version={ckpt.refssm_version} step={ckpt.step}")
    for section in ("model", "train"):
        print(f"{section}: " + " ".join(f"{k}={v}" for k, v in ckpt.config[section].items()))
    print(f"parameters: {sum(v.size for v in ckpt.params.values())} in {len(ckpt.params)} arrays")
    for name, v in ckpt.params.items():
        print(f"  {name:32s} {str(v.shape):14s} {str(v.dtype):8s} |x|max={np.abs(v).max():.3g}")
    return 0


def read_metrics(run_dir):
    """The entries of run_dir/metrics.jsonl: (steps, epochs), lists of dicts."""
    path = os.path.join(run_dir, METRICS_NAME)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: RUN must be a directory written by refssm train")
    steps, epochs = [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n}: not a JSON line") from None
            (epochs if any(k.startswith("val_") for k in entry) else steps).append(entry)
    return steps, epochs


def plot(run_dir):
    """Loss and accuracy curves (per step, smoothed; validation per epoch) and spike rate per layer, as
    run_dir/curves.png. Needs matplotlib (`pip install 'refssm[plots]'`)."""
    steps, epochs = read_metrics(run_dir)
    if not steps:
        raise ValueError(f"{run_dir}/{METRICS_NAME} holds no training steps yet")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("refssm plot needs matplotlib: pip install 'refssm[plots]'") from None
    s = np.array([e["step"] for e in steps])
    window = max(1, len(steps) // 50)

    def smooth(v):
        return np.convolve(v, np.ones(window) / window, mode="valid")

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    loss = np.array([e["loss"] for e in steps])
    axes[0].plot(s[window - 1:], smooth(loss), label="train (smoothed)")
    if epochs:
        axes[0].plot([e["step"] for e in epochs], [e["val_loss"] for e in epochs], "o-", label="validation")
    axes[0].set(xlabel="step", ylabel="loss", title="loss")
    if "acc" in steps[0]:
        axes[1].plot(s[window - 1:], smooth(np.array([e["acc"] for e in steps])), label="train (smoothed)")
        if epochs and "val_acc" in epochs[0]:
            axes[1].plot([e["step"] for e in epochs], [e["val_acc"] for e in epochs], "o-", label="validation")
    axes[1].set(xlabel="step", ylabel="accuracy", title="accuracy")
    rates = np.array([e["spike_rate"] for e in steps])
    for layer in range(rates.shape[1] if rates.ndim == 2 else 0):
        axes[2].plot(s[window - 1:], smooth(rates[:, layer]), label=f"layer {layer}")
    axes[2].set(xlabel="step", ylabel="spikes per site", title="spike rate per layer (train)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(os.path.abspath(run_dir))
    fig.tight_layout()
    out = os.path.join(run_dir, "curves.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _cmd_plot(args):
    print(f"wrote {plot(args.run)}")
    return 0


def add_parser(sub):
    from refssm import datasets

    p = sub.add_parser("train", help="train a spiking SSM and report accuracy, spike rate and energy",
                       description="Train a spiking SSM; the task's target picks the head (classification, "
                       "retrieval, per-step sequence, regression, language model).")
    p.add_argument("--model", choices=models.MODELS, default=None, help="default spikingssm")
    p.add_argument("--out", default=None, help="run directory (default runs/MODEL-TASK)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out (only --epochs may grow)")
    p.add_argument("--force", action="store_true", help="overwrite a run already in --out")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many optimizer steps in total")
    p.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                   help="under mpiexec: end the job when a rank waits this long for the others in one collective "
                        f"(a rank died or hangs; default {distributed.DEFAULT_TIMEOUT:g})")
    p.add_argument("-o", "--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the task (see `refssm data list`), e.g. -o length=50; repeatable")
    for k, v in TRAIN_DEFAULTS.items():
        if k == "task_options":
            continue
        p.add_argument("--" + k.replace("_", "-"), type=str if v is None else type(v), default=None,
                       choices=tuple(datasets.TASKS) if k == "task" else None,
                       help=f"default {v}" if k != "data_dir" else "directory with the task's files")
    choices = {"backend": backend.BACKENDS, "dtype": backend.DTYPES, "norm": ("batch", "layer"),
               "neuron": ("lif", "sdn"), "lif_gradient": ("output", "bptt", "bptt_detach_reset"),
               "reset": ("hard", "soft"), "mixing": ("glu", "gsu"),
               "frac_method": ("gl", "gl_explicit", "soe_decoupled"),
               "surrogate": ("triangle", "atan", "fast_sigmoid", "sigmoid", "rectangle")}
    for k, t in _MODEL_FLAGS.items():
        key = "n_layers" if k == "layers" else k
        default = models.COMMON.get(key)
        p.add_argument("--" + k.replace("_", "-"), type=t, default=None, choices=choices.get(k),
                       help="default " + (str(default) if default is not None else "per model (refssm.models.MODEL_DEFAULTS)"))
    for flag, text in (("bidirectional", "two-sided SSM kernel"), ("causal", "one-sided kernel (binary_s4d's default "
                                                                   "is two-sided)"),
                       ("prenorm", "normalise before each block"), ("postnorm-bug", "reproduce the public code's "
                                                                              "discarded post-norm")):
        p.add_argument("--" + flag, action="store_true", help=text)
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("eval", help="evaluate a checkpoint on its task's test split")
    p.add_argument("checkpoint")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--backend", choices=backend.BACKENDS, default=None,
                   help="where to evaluate (default: the backend the run was trained with)")
    p.set_defaults(func=_cmd_eval)
    p = sub.add_parser("info", help="print a checkpoint's configuration and parameters")
    p.add_argument("checkpoint")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("plot", help="loss/accuracy curves and spike rates of a run, as RUN/curves.png")
    p.add_argument("run", help="a run directory written by refssm train")
    p.set_defaults(func=_cmd_plot)
