"""The `phasedoit` console script. Deploys run through doit; this manages the local endpoint and draws graphs.

phasedoit graph [--stage STAGE] [--format dot|mermaid] [--app DIR]
    print the app's dependency graph: a cluster per phase, an arrow exporter -> importer per export
phasedoit timeline [--stage STAGE] [--run ID] [-o FILE] [--format svg|html] [--app DIR]
    a picture of a recorded run: phases as bands, a bar per service, the critical path
phasedoit local status | stop | env
    the embedded local CloudFormation endpoint; `env` prints the variables that point the AWS CLI at it
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from phasedoit import graph, local, runrecord, runstate, timeline
from phasedoit.config import CONFIG_NAME, DEFAULT_STAGE, load_config
from phasedoit.errors import PhasedoitError
from phasedoit.planning import STATE_DIR, plan_stage

DRAWINGS = {"dot": graph.to_dot, "mermaid": graph.to_mermaid}
PICTURES = {"svg": timeline.to_svg, "html": timeline.to_html}


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
    picture = commands.add_parser(
        "timeline",
        help="a picture of a recorded run (SVG or HTML): phases as bands, a bar per service",
        description="Draw a run recorded in .phasedoit/runs/<stage>/: phases as bands, each service a bar"
        " from its start to its end coloured by its outcome, the critical path outlined, the totals.",
    )
    picture.add_argument("--stage", help="the run's stage (default: $PHASEDOIT_STAGE, else dev)")
    picture.add_argument("--run", help="the run's id, or its start (default: the stage's last run)")
    picture.add_argument("-o", "--output", type=Path, help="write it to this file (default: stdout)")
    picture.add_argument("--format", choices=sorted(PICTURES), help="default: svg, or the output's suffix")
    picture.add_argument("--app", type=Path, default=Path(), help=f"the folder of {CONFIG_NAME} (default: .)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "local":
        return local.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "timeline":
        return draw_run(args.app, args.stage, args.run, args.output, args.format)
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


def draw_run(app_dir: Path, stage: str | None, run: str | None, output: Path | None, form: str | None) -> int:
    """Draw a recorded run; a user error is one line on stderr."""
    stage = stage or os.environ.get("PHASEDOIT_STAGE") or DEFAULT_STAGE
    form = form or ("html" if output and output.suffix.lower() in (".html", ".htm") else "svg")
    try:
        path = runrecord.find(app_dir / STATE_DIR, stage, run)
        picture = PICTURES[form](runstate.fold(runrecord.load(path)))
        if output is None:
            sys.stdout.write(picture)
        else:
            output.write_text(picture, encoding="utf-8")
    except PhasedoitError as e:
        print(e, file=sys.stderr)
        return 1
    except OSError as e:
        print(f"cannot write {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
