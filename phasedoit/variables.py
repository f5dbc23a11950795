"""doit's command-line variables (`doit deploy stage=prod`): a mistyped or empty one is an error.

doit takes any `name=value` argument as a variable and `get_var` answers None for a name never given, so
`stgae=prod` would deploy dev, silently.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping, Sequence

from phasedoit.errors import PhasedoitError

# The variables phasedoit reads, in the order they are listed to the user.
KNOWN = ("stage", "force", "adopt", "yes", "schedule")


def given() -> dict[str, str]:
    """Every `name=value` of doit's command line; {} outside a doit run (or in its spawned workers).

    doit keeps them in a module global that only `get_var` reads, one name at a time: there is no public
    way to list them.
    """
    from doit import doit_cmd

    return dict(doit_cmd._CMDLINE_VARS or {})


def check(given: Mapping[str, str], known: Collection[str]) -> None:
    """One line per variable that phasedoit does not know or that is empty, naming the ones it knows."""
    names = list(known) if isinstance(known, Sequence) else sorted(known)
    listed = ", ".join(names)
    problems = []
    for name, value in given.items():
        if name not in known:
            close = difflib.get_close_matches(name.lower(), names, n=1)
            hint = f" (did you mean {close[0]}={value}?)" if close else ""
            problems.append(f"{name}={value}: unknown variable{hint}; phasedoit knows {listed}")
        elif not value.strip():
            problems.append(f"{name}=: needs a value; phasedoit knows {listed}")
    if problems:
        raise PhasedoitError("\n".join(problems))
