"""The `phasedoit` console script. Deploys run through doit; this only manages the local endpoint."""

from __future__ import annotations

import argparse
import sys

from phasedoit import local


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phasedoit")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "local", help="the embedded local CloudFormation endpoint: status | stop", add_help=False
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "local":
        return local.main(rest)
    return 2  # argparse has already refused any other command


if __name__ == "__main__":
    sys.exit(main())
