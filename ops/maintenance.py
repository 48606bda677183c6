"""`python manage.py maintenance [--json]`: one memory maintenance pass, then exit.

Every worker runs this command in a child process, shortly after it starts and then every
MAINTENANCE_INTERVAL_S (`livekit_layer.maintenance_schedule`). With MAINTENANCE_IN_WORKER=false
a scheduler runs it instead (e.g. cron: `*/5 * * * * cd /srv/companion && .venv/bin/python
manage.py maintenance`). Any number may run at once: one does the pass, the others print that
it was skipped. What the pass does is `services.memory.memory_maintenance`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from core.config import Settings
from ops.command import OK, Command
from services.composition import build_services


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the pass's report as one JSON object"
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    services = await build_services(settings)
    try:
        report = await services.maintenance.run_pass()
    finally:
        await services.aclose()
    print(json.dumps(report, sort_keys=True) if args.json else describe(report))
    return OK


def describe(report: dict[str, Any]) -> str:
    """The report as one line an operator reads."""
    if report.get("skipped"):
        return "skipped: another process is running the maintenance pass"
    parts = [
        f"{report['sessions']} session(s) consolidated ({report['consolidated_messages']} "
        f"messages, {report['saved']} memories saved, {report['failed']} failed)",
        f"{report['profiles']} profile summary(ies) written ({report['profiles_left']} left)",
    ]
    if "decayed" in report:
        parts.append(f"{report['decayed']} memories decayed")
    parts.append(
        f"{report['scopes']} scope(s) checked: {report['merged']} merged, "
        f"{report['contradictions']} contradiction(s) flagged"
    )
    if "expired_turns" in report:
        parts.append(
            f"{report['expired_turns']} old turn(s) and {report['expired_values']} old value(s) "
            "expired"
        )
    if report.get("lease_lost"):
        parts.append("stopped: another process took the pass over")
    return f"maintenance pass: {'; '.join(parts)} ({report['seconds']} s)"


COMMAND = Command(
    name="maintenance",
    summary="run one memory maintenance pass (crash recovery, profile summaries, decay, merges, "
    "contradictions, retention); workers run it every MAINTENANCE_INTERVAL_S",
    add_arguments=add_arguments,
    run=run,
)
