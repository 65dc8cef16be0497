"""`python -m alerts`."""

from alerts.cli import main

main()
