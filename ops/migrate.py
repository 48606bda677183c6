"""`python manage.py migrate [--check]`: apply the pending SQL migrations, or say which are
pending. A worker applies them at its start too; jobs only check."""

from __future__ import annotations

import argparse
import sys

from core.config import Settings
from infrastructure import migrations
from infrastructure.database import Database, open_migrated
from ops.command import CHECK_FAILED, OK, Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check",
        action="store_true",
        help="apply nothing; list what is pending and exit 1 if anything is",
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.check:
        return await check(settings)
    database, applied = await open_migrated(settings)
    await database.aclose()
    files = {m.version: m.file_name for m in migrations.discover()}
    if not applied:
        print(f"nothing to apply: the schema is current ({len(files)} migrations)")
        return OK
    for version in applied:
        print(f"applied {files[version]}")
    print(f"{len(applied)} applied; the schema is current ({len(files)} migrations)")
    return OK


async def check(settings: Settings) -> int:
    database = await Database.open(settings)
    try:
        pending = await migrations.pending_in(database.dsn, settings)
    finally:
        await database.aclose()
    if not pending:
        print(f"the schema is current ({len(migrations.discover())} migrations)")
        return OK
    for migration in pending:
        print(f"pending {migration.file_name}")
    print(
        f"{len(pending)} migration(s) pending: run `python manage.py migrate`", file=sys.stderr
    )
    return CHECK_FAILED


COMMAND = Command(
    name="migrate",
    summary="apply the pending database migrations (supabase/migrations); --check lists them",
    add_arguments=add_arguments,
    run=run,
)
