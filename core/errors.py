"""The project's error tree. Each error says whether retrying can help and what to do next."""

from __future__ import annotations


class CompanionError(Exception):
    """Base of every error this project raises on purpose.

    Attributes:
        retryable: whether the same call may succeed later without any change.
        suggestion: one sentence telling the caller (or the user) what to do.
    """

    retryable: bool = False
    default_suggestion: str = ""

    def __init__(
        self, message: str, *, suggestion: str | None = None, retryable: bool | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion if suggestion is not None else self.default_suggestion
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        if self.suggestion:
            return f"{self.message} ({self.suggestion})"
        return self.message


class ConfigError(CompanionError):
    """A setting is missing or wrong; raised at start, before anything runs."""


class InvalidInput(CompanionError):
    """Input from a user, the model or a client that cannot be accepted as it is."""


class InvalidIdentity(InvalidInput):
    """A user or companion id that is not a valid UUID, or a name that matches nothing."""


class AccessDenied(CompanionError):
    """An attempt to read or write data that belongs to another user or companion."""


class LimitExceeded(CompanionError):
    """A rate limit or quota was reached."""

    retryable = True


class QuotaExceeded(LimitExceeded):
    """The person keeps as many memories as the quota allows; only forgetting makes room.

    Attributes:
        used: the explicit memories the person keeps now (current values).
        quota: `settings.memory_quota_per_user`.
    """

    retryable = False

    def __init__(self, message: str, *, suggestion: str, used: int, quota: int) -> None:
        super().__init__(message, suggestion=suggestion)
        self.used = used
        self.quota = quota


class StorageUnavailable(CompanionError):
    """Postgres could not be reached or refused the operation for a transient reason."""

    retryable = True
    default_suggestion = "check that Postgres is running and DATABASE_URL is right; writes are kept"


class EmbeddingError(CompanionError):
    """The embedding backend failed; retrieval falls back to full-text search."""

    retryable = True


class EmbeddingDimensionMismatch(ConfigError):
    """The configured embedding dimension differs from the database column."""


class MigrationError(CompanionError):
    """A schema migration failed to apply."""


class SchemaBehind(MigrationError):
    """The database lacks migrations this code needs; a job refuses to start on it.

    Migrations run once per worker (at its start) or as `python manage.py migrate`, never in a
    job, so a job that finds them missing says so instead of migrating.
    """

    default_suggestion = (
        "run `python manage.py migrate` (a worker started with `python agent.py start|dev|"
        "console` also applies them), then start the session again"
    )


class LLMUnavailable(CompanionError):
    """The language model could not be reached or gave an unusable answer."""

    retryable = True
    default_suggestion = "check OPENAI_API_KEY or OPENAI_BASE_URL; background work is retried later"
