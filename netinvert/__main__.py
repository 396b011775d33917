"""``python -m netinvert``: the command line."""

from netinvert.cli.main import main

main()
