"""`python -m api [--host H] [--port P]`: serve the API (same as `arbor api`)."""

import sys

from api.cli import run

raise SystemExit(run(sys.argv[1:]))
