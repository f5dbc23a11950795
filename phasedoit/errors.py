from __future__ import annotations


class PhasedoitError(Exception):
    """A user error: printed as its message alone, one line per problem, with exit status 1."""
