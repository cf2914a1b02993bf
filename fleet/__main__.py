"""``python -m fleet``."""

from fleet.cli import run

run()
