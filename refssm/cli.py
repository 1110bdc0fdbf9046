"""The `refssm` command line.

Each subcommand lives next to the code it drives and registers itself here through an
`add_parser(subparsers)` function that sets `func` on its parser.

A mistake (a bad option value, a missing or corrupt file) prints one line, `refssm: error: ...`, and
exits with status 2; Ctrl-C exits with 130 (refssm train saves a checkpoint first and says how to
resume); a closed pipe (`refssm info ... | head`) ends quietly.
"""

import argparse
import os
import sys


def build_parser():
    import refssm

    parser = argparse.ArgumentParser(prog="refssm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"refssm {refssm.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    from refssm import fixtures, generate, train
    from refssm.datasets import cli as data_cli

    train.add_parser(sub)
    generate.add_parser(sub)
    data_cli.add_parser(sub)
    fixtures.add_parser(sub)
    return parser


def main(argv=None):
    from refssm.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, CheckpointError) as e:
        if isinstance(e, BrokenPipeError):
            return _quiet_pipe()
        print(f"refssm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("refssm: interrupted", file=sys.stderr)
        return 130


def _quiet_pipe():
    """The reader of our stdout went away (e.g. `| head`): stop writing, no traceback (Python docs,
    "Note on SIGPIPE")."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
