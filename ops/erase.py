"""`python manage.py erase --user UUID --yes`: erase everything stored about one person, as
their own "forget everything" does (see `services.people.person_data`): one transaction, after
their writes still queued or spooled are erased; the account row and the companions stay.

Without --yes nothing is erased: it says what would be, and exits 1. Erase a person who is not
talking right now: a conversation going on in a worker keeps what it already holds until it
ends, and its later writes find no conversation to go to (they are set aside).
"""

from __future__ import annotations

import argparse
import sys

from core.config import Settings
from ops.command import CHECK_FAILED, OK, Command
from ops.person import person_services


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="the person's user id (a UUID)")
    parser.add_argument(
        "--yes", action="store_true", help="really erase (without it, only say what would be)"
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    async with person_services(settings, args.user) as (services, user_id):
        if not args.yes:
            stored = (await services.person_data.inventory(user_id)).to_json()
            listed = ", ".join(f"{k} {v}" for k, v in stored.items() if v)
            print(f"would erase for user {user_id}: {listed or 'nothing stored'}")
            print("nothing erased: add --yes to erase it for good", file=sys.stderr)
            return CHECK_FAILED
        erased = await services.person_data.erase(user_id)
    rows = ", ".join(f"{k} {v}" for k, v in erased.items() if v)
    print(f"erased everything about user {user_id}: {sum(erased.values())} rows ({rows})")
    return OK


COMMAND = Command(
    name="erase",
    summary="erase everything stored about one person (--yes to really do it)",
    add_arguments=add_arguments,
    run=run,
)
