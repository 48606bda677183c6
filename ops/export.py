"""`python manage.py export --user UUID [--out FILE]`: everything stored about one person, as
JSON: profile, companions, memories (every version, the episodic log, writes not in the
database yet), conversations with their messages, follow-ups, the relationship state, safety
incidents (see `services.people.person_data`).

Without --out the JSON is the only thing on stdout; with it, the file is created owner-only
(0600: it holds the person's words) and a line on stdout says what was written.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from core.config import Settings
from core.errors import InvalidInput
from ops.command import OK, Command
from ops.person import person_services


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="the person's user id (a UUID)")
    parser.add_argument(
        "--out", type=Path, help="write the JSON to this new file (owner-only) instead of stdout"
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    out: Path | None = args.out
    if out is not None and out.exists():
        raise InvalidInput(
            f"{out} exists already", suggestion="give a new file name; nothing is overwritten"
        )
    async with person_services(settings, args.user) as (services, user_id):
        data = await services.person_data.export(user_id)
    text = json.dumps(data, ensure_ascii=False, indent=2)
    if out is None:
        print(text)
        return OK
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise InvalidInput(
            f"cannot create {out} ({exc.strerror})",
            suggestion="give a file in a directory you can write to",
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    conversations = len(data["conversations"])
    print(f"exported user {user_id} to {out} ({conversations} conversations)")
    return OK


COMMAND = Command(
    name="export",
    summary="print (or write to --out) everything stored about one person, as JSON",
    add_arguments=add_arguments,
    run=run,
)
