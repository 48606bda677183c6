"""What an operator command is, and how manage.py runs one.

A command prints its result on stdout. A failure is a `CompanionError`: manage.py prints its
message and what to do on stderr and exits with code 2 (as argparse does for bad arguments).
Secrets are never printed; a command whose result is a secret (`token`) prints only that.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from core.config import Settings, load_settings
from core.errors import CompanionError

# Exit codes: 0 done; 1 a check found something to do (`migrate --check`); 2 the command
# could not do its work (bad arguments, a setting, the database), with a message saying why.
OK, CHECK_FAILED, FAILED = 0, 1, 2


@dataclass(frozen=True)
class Command:
    """One `python manage.py <name>` subcommand.

    Attributes:
        name: the subcommand's name.
        summary: one line for `python manage.py --help`.
        add_arguments: adds the subcommand's options to its parser.
        run: does the work; returns the exit code (OK, or CHECK_FAILED for a check).
    """

    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Settings], Awaitable[int]]


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manage.py",
        description="Operator commands of the companion. Settings come from the environment "
        "or .env, as for agent.py.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress (INFO) on stderr"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for command in commands:
        command_parser = sub.add_parser(
            command.name, help=command.summary, description=command.summary
        )
        command.add_arguments(command_parser)
        command_parser.set_defaults(run=command.run)
    return parser


def main(commands: Sequence[Command], argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, load the settings, run the chosen command; its exit code."""
    args = build_parser(commands).parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings()
        code: int = asyncio.run(args.run(args, settings))
    except CompanionError as err:
        print(f"manage.py {args.command}: {err.message}", file=sys.stderr)
        if err.suggestion:
            print(f"  what to do: {err.suggestion}", file=sys.stderr)
        return FAILED
    return code
