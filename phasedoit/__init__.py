"""phasedoit: deploy a monorepo of CloudFormation services in dependency phases, with doit."""

from __future__ import annotations

__version__ = "0.1.0"
