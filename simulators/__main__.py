"""``python -m simulators``: the simulated i5 factory (see :mod:`simulators.cli`)."""

from simulators.cli import main

if __name__ == "__main__":
    main()
