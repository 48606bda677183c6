"""`python manage.py token --user UUID --room NAME [--ttl 1h] [--dev]`: a LiveKit access token
to join a room as a known user, signed with LIVEKIT_API_KEY / LIVEKIT_API_SECRET.

The token is the only thing printed on stdout, so `$(python manage.py token ...)` captures it;
who and what it is for go to stderr.
"""

from __future__ import annotations

import argparse
import re
import sys
import uuid
from datetime import timedelta

from livekit.api import AccessToken, VideoGrants

from core.config import Settings
from core.errors import ConfigError, InvalidIdentity, InvalidInput
from core.validators import parse_user_id
from ops.command import OK, Command
from services.people.user_service import resolve_identity

DEFAULT_TTL = "1h"
MIN_TTL = timedelta(minutes=1)
MAX_TTL = timedelta(hours=24)
MAX_ROOM_CHARS = 128
_TTL = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_ROOM = re.compile(r"^[A-Za-z0-9_.:-]+$")


def parse_ttl(raw: str) -> timedelta:
    """"90", "90s", "30m", "2h" or "1d", between a minute and a day."""
    match = _TTL.match(raw.strip())
    if match is None:
        raise InvalidInput(
            f"--ttl {raw!r} is not a duration", suggestion="give seconds or e.g. 30m, 2h, 1d"
        )
    ttl = timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise InvalidInput(
            f"--ttl {raw} is outside 1 minute to 24 hours",
            suggestion="a token only needs to live until its holder joins; 1h is the default",
        )
    return ttl


def looks_like_uuid(raw: str) -> bool:
    try:
        uuid.UUID(raw.strip())
    except ValueError:
        return False
    return True


def parse_room(raw: str) -> str:
    if not raw or len(raw) > MAX_ROOM_CHARS or _ROOM.match(raw) is None:
        raise InvalidInput(
            f"--room {raw[:40]!r} is not a room name",
            suggestion=f"use 1 to {MAX_ROOM_CHARS} letters, digits and _ . : -",
        )
    return raw


def participant_token(
    settings: Settings, *, identity: str, room: str, ttl: timedelta
) -> str:
    """A signed JWT that lets `identity` join `room`, publish and subscribe audio, video and
    data, for `ttl`."""
    if settings.livekit_api_key is None or settings.livekit_api_secret is None:
        raise ConfigError(
            "LIVEKIT_API_KEY and LIVEKIT_API_SECRET are not set",
            suggestion="set them to your LiveKit Cloud project's API key and secret (or "
            "devkey / secret for `livekit-server --dev`), in the environment or in .env",
        )
    grants = VideoGrants(
        room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True
    )
    return (
        AccessToken(
            settings.livekit_api_key.get_secret_value(),
            settings.livekit_api_secret.get_secret_value(),
        )
        .with_identity(identity)
        .with_grants(grants)
        .with_ttl(ttl)
        .to_jwt()
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--user", required=True, help="the user's id, a UUID (with --dev: any participant name)"
    )
    parser.add_argument("--room", required=True, help="the room to join")
    parser.add_argument(
        "--ttl", default=DEFAULT_TTL, help="how long the token can be used to join: seconds, "
        "or e.g. 30m, 2h (1 minute to 24 hours; default 1h)"
    )
    parser.add_argument(
        "--dev", action="store_true", help="--user is a participant name, as the Agents "
        "Playground sends; join as the user `agent.py dev` maps that name to"
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.dev:
        # What `python agent.py dev` does with a participant identity: a name maps, a UUID is
        # that user (checked strictly).
        user_id = resolve_identity(
            args.user, console=False, dev_mode=True, dev_user_id=settings.dev_user_id
        )
    else:
        try:
            user_id = parse_user_id(args.user, what="--user")
        except InvalidIdentity as err:
            if looks_like_uuid(args.user):
                raise
            raise InvalidIdentity(
                err.message, suggestion="give the user's UUID, or add --dev to join as the "
                "user `python agent.py dev` maps this participant name to"
            ) from None
    room, ttl = parse_room(args.room), parse_ttl(args.ttl)
    token = participant_token(settings, identity=str(user_id), room=room, ttl=ttl)
    print(token)
    print(
        f"token for user {user_id} in room {room!r}, valid to join for {ttl}",
        file=sys.stderr,
    )
    return OK


COMMAND = Command(
    name="token",
    summary="print a LiveKit access token to join a room as a known user",
    add_arguments=add_arguments,
    run=run,
)
