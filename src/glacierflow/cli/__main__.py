"""``python -m glacierflow.cli``."""

from glacierflow.cli.main import main

main()
