"""What the commands about one person (`export`, `erase`) share: the services, and the person.

They run on the same services a worker's job builds (`build_services`), so an export includes
the writes still in the spool and an erasure reaches them too.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core.config import Settings
from core.errors import InvalidIdentity
from core.validators import parse_user_id
from services.composition import Services, build_services


@asynccontextmanager
async def person_services(
    settings: Settings, raw_user: str
) -> AsyncIterator[tuple[Services, uuid.UUID]]:
    """The services, and the id of a user who exists.

    Raises:
        InvalidIdentity: --user is not a UUID, or no user has it.
    """
    user_id = parse_user_id(raw_user, what="--user")
    services = await build_services(settings)
    try:
        if await services.users.get(user_id) is None:
            raise InvalidIdentity(
                f"no user {user_id} in this database",
                suggestion="check the id (the participant identity the person joins with) "
                "and DATABASE_URL",
            )
        yield services, user_id
    finally:
        await services.aclose()
