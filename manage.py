"""Operator commands of the companion: `python manage.py --help` lists them.

    python manage.py migrate [--check]                       apply (or list) pending migrations
    python manage.py maintenance [--json]                    one memory maintenance pass
    python manage.py token --user UUID --room NAME [--ttl]   a LiveKit token to join as a user
    python manage.py export --user UUID [--out FILE]         everything stored about a person
    python manage.py erase --user UUID --yes                 erase everything about a person

A new command is a module in ops/ exposing a `Command`, added to COMMANDS below.
"""

from __future__ import annotations

import sys

from ops import erase, export, maintenance, migrate, token
from ops.command import main

COMMANDS = (migrate.COMMAND, maintenance.COMMAND, token.COMMAND, export.COMMAND, erase.COMMAND)

if __name__ == "__main__":
    sys.exit(main(COMMANDS))
