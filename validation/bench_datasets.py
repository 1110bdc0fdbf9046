"""How fast the generated data sets are made: ListOps and Pathfinder-32, extrapolated to LRA's sizes.

    python validation/bench_datasets.py                 # 2,000 ListOps examples, 1,000 Pathfinder images
    python validation/bench_datasets.py --listops 5000 --pathfinder 2000 --seed 1

Times one process on one core, without the cache (a cached data set loads in seconds). LRA's sizes:
ListOps 96,000 / 2,000 / 2,000 examples; Pathfinder-32 200,000 images (split 80 / 10 / 10 by `load`).
The full Pathfinder set is made (and cached) by `refssm data generate pathfinder`, which prints its time.
Tokenising checks every ListOps source's structure (listops.encode) and stores uint8 ids.
"""

import argparse
import time

import numpy as np

from refssm.datasets import listops, pathfinder
from refssm.datasets.core import pad

LISTOPS_LRA = 100_000
PATHFINDER_LRA = 200_000


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_listops(n, seed):
    examples, t_generate = _timed(lambda: listops.generate(n, seed))
    _, t_encode = _timed(lambda: pad([listops.encode(s) for s, _ in examples], 2000, listops.DTYPE))
    lengths = np.array([len(listops.tokenize(s)) for s, _ in examples])
    total = t_generate + t_encode
    print(f"ListOps  n={n}: generate {t_generate:.2f} s + tokenise/pad {t_encode:.2f} s = {total:.2f} s, "
          f"{n / total:,.0f} examples/s; lengths {lengths.min()}..{lengths.max()}, "
          f"median {np.median(lengths):.0f}")
    print(f"         extrapolated to LRA's {LISTOPS_LRA:,}: {LISTOPS_LRA * total / n / 60:.1f} min")


def bench_pathfinder(n, seed):
    (images, labels), seconds = _timed(lambda: pathfinder.generate(n, seed))
    print(f"Pathfinder-32 n={n}: {seconds:.2f} s, {n / seconds:,.0f} images/s, "
          f"{1000 * seconds / n:.2f} ms/image; labels 1: {labels.mean():.3f}, mean pixel {images.mean():.3f}")
    print(f"         extrapolated to {PATHFINDER_LRA:,} images: {PATHFINDER_LRA * seconds / n / 60:.1f} min")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listops", type=int, default=2000, help="ListOps examples to generate")
    parser.add_argument("--pathfinder", type=int, default=1000, help="Pathfinder images to generate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    bench_listops(args.listops, args.seed)
    bench_pathfinder(args.pathfinder, args.seed)


if __name__ == "__main__":
    main()
