"""Operator commands of the companion: `python manage.py --help` lists them.

    python manage.py migrate [--check]                       apply (or list) pending migrations
    python manage.py token --user UUID --room NAME [--ttl]   a LiveKit token to join as a user

A new command is a module in ops/ exposing a `Command`, added to COMMANDS below.
"""

from __future__ import annotations

import sys

from ops import migrate, token
from ops.command import main

COMMANDS = (migrate.COMMAND, token.COMMAND)

if __name__ == "__main__":
    sys.exit(main(COMMANDS))
