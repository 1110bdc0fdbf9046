"""The `refssm` command line.

Each subcommand lives next to the code it drives and registers itself here through an
`add_parser(subparsers)` function that sets `func` on its parser.
"""

import argparse
import sys


def build_parser():
    parser = argparse.ArgumentParser(prog="refssm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    from refssm import fixtures, train
    from refssm.datasets import cli as data_cli

    train.add_parser(sub)
    data_cli.add_parser(sub)
    fixtures.add_parser(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
