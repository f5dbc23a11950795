"""The `phasedoit` console script. Deploys run through doit; this manages the local endpoint and draws graphs.

phasedoit graph [--stage STAGE] [--format dot|mermaid] [--app DIR]
    print the app's dependency graph: a cluster per phase, an arrow exporter -> importer per export
phasedoit local status | stop | env
    the embedded local CloudFormation endpoint; `env` prints the variables that point the AWS CLI at it
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from phasedoit import graph, local
from phasedoit.config import CONFIG_NAME, load_config
from phasedoit.errors import PhasedoitError
from phasedoit.planning import plan_stage

DRAWINGS = {"dot": graph.to_dot, "mermaid": graph.to_mermaid}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="phasedoit", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "local", help="the embedded local CloudFormation endpoint: status | stop | env", add_help=False
    )
    drawing = commands.add_parser(
        "graph",
        help="print the dependency graph, phases as clusters (Graphviz dot or Mermaid)",
        description="Print the dependency graph of the app's services for one stage: a cluster per"
        " phase, an arrow from exporter to importer for each export. `phasedoit graph | dot -Tsvg`",
    )
    drawing.add_argument("--stage", help="the stage to draw (default: $PHASEDOIT_STAGE, else dev)")
    drawing.add_argument("--format", choices=sorted(DRAWINGS), default="dot", help="default: dot")
    drawing.add_argument("--app", type=Path, default=Path(), help=f"the folder of {CONFIG_NAME} (default: .)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "local":
        return local.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return draw(args.app, args.stage, args.format)


def draw(app_dir: Path, stage: str | None, form: str) -> int:
    """Print the drawing; a user error is its one-line message on stderr, as `doit` shows it."""
    try:
        plan = plan_stage(load_config(app_dir / CONFIG_NAME), stage, os.environ)
    except PhasedoitError as e:
        print(e, file=sys.stderr)
        return 1
    sys.stdout.write(DRAWINGS[form](plan.graph, plan.phases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
