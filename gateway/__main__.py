"""``python -m gateway``: the edge gateway (see :mod:`gateway.cli`)."""

from gateway.cli import main

main()
