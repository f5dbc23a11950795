"""Deploy the services listed in ./phases.yml, phase by phase: `doit -n 4 deploy`. Works in any app folder."""

from phasedoit.loader import doit_namespace

globals().update(doit_namespace(__file__))
