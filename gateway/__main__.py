"""``python -m gateway`` is the ``camgate`` command."""

from gateway.cli import main

main()
