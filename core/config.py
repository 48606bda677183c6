"""One `Settings` object, parsed once at start-up and passed down to whoever needs it."""

from __future__ import annotations

import logging
import uuid
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError
from core.validators import placeholder_reason

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Stable across machines and runs so `console` always talks to the same remembered person.
DEFAULT_DEV_USER_ID = uuid.UUID("5f0c8a52-2d36-4c1e-9a51-6f1d7e0b9a01")
_URL_EXAMPLES = {
    "REDIS_URL": "redis://:password@host:6379/0 (or rediss:// for TLS)",
    "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1",
}

SUPABASE_KEYS = ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_ANON_KEY")
SUPABASE_WITHOUT_DSN = (
    "{names} set but DATABASE_URL is not: this app connects to Postgres itself and does not use "
    "the Supabase API keys, so it would run on its embedded database instead of your project"
)
SUPABASE_DSN_HINT = (
    "in the Supabase dashboard open Project Settings > Database > Connection string, copy the "
    "pooler URI (Transaction pooler, port 6543, with your database password) into DATABASE_URL"
)


class EmbeddingProvider(str, Enum):
    OPENAI = "openai"
    LOCAL = "local"


class TTSProvider(str, Enum):
    AUTO = "auto"
    UPLIFTAI = "upliftai"
    OPENAI = "openai"


class Settings(BaseSettings):
    """Every knob of the companion. Names match the environment variables (upper-cased)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        case_sensitive=False,
        # `KEY=` in .env means "use the default", as .env.example lists every key empty.
        env_ignore_empty=True,
        # pydantic's own messages would quote the raw value, which may carry a password.
        hide_input_in_errors=True,
    )

    # --- Database -------------------------------------------------------------------------
    database_url: SecretStr | None = Field(
        default=None,
        description="Postgres connection string; Supabase's pooler URI works. Unset: embedded.",
    )
    embedded_pg_dir: Path = Field(
        default=PROJECT_ROOT / ".data" / "postgres",
        description="Data directory of the embedded Postgres used when DATABASE_URL is unset.",
    )
    db_pool_min_size: int = Field(default=1, ge=0, le=100)
    db_pool_max_size: int = Field(default=10, ge=1, le=200)
    db_statement_cache_size: int | None = Field(
        default=None,
        ge=0,
        description="asyncpg prepared-statement cache; unset: 0 behind a pooler (port 6543).",
    )
    db_command_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Longest one statement may run; then the caller gets 'try again in a "
        "moment' (or the write is retried and kept), instead of a voice that stops answering.",
    )
    db_acquire_timeout_s: float = Field(
        default=5.0, gt=0,
        description="Longest wait for a pooled connection (all busy, or a new one opening).",
    )
    db_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Longest opening one database connection may take."
    )
    job_shutdown_budget_s: float = Field(
        default=6.0,
        gt=0,
        le=60,
        description="Time the job's own shutdown (summaries, the write drain) may take. LiveKit "
        "kills a job process 10 s (shutdown_process_timeout) after asking it to stop; before "
        "the job's shutdown starts it closes the session (waiting up to 2 s for a final "
        "transcript), and after it the process must still exit. What is not written by then "
        "is spooled to disk.",
    )

    # --- OpenAI or any OpenAI-compatible server ------------------------------------------
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = Field(
        default=None, description="Any OpenAI-compatible server (Groq, Ollama, vLLM)."
    )
    openai_timeout_s: float = Field(default=15.0, gt=0)
    openai_max_retries: int = Field(default=2, ge=0, le=10)
    llm_model: str = "gpt-4.1-mini"
    stt_model: str = "gpt-4o-mini-transcribe"
    tts_model: str = "gpt-4o-mini-tts"
    tts_voice: str = "ash"
    tts_provider: TTSProvider = TTSProvider.AUTO

    # --- Embeddings ------------------------------------------------------------------------
    embedding_provider: EmbeddingProvider = EmbeddingProvider.LOCAL
    embedding_model: str = Field(
        default="all-MiniLM-L6-v2",
        description="Local: all-MiniLM-L6-v2 (bundled). OpenAI: e.g. text-embedding-3-small.",
    )
    embedding_dimensions: int = Field(default=384, ge=8, le=4096)

    # --- Redis -------------------------------------------------------------------------------
    redis_url: SecretStr | None = Field(
        default=None, description="redis://[:password@]host:port/db; its password is a secret."
    )
    redis_enabled: bool = True
    cache_default_ttl_s: int = Field(default=300, ge=1)
    cache_local_max_entries: int = Field(default=10_000, ge=16)
    redis_retry_interval_s: float = Field(
        default=5.0, gt=0, description="How often a dead Redis is probed again."
    )

    # --- Write batcher ---------------------------------------------------------------------
    batch_max_size: int = Field(default=200, ge=1, le=10_000)
    batch_flush_interval_ms: int = Field(default=250, ge=1)
    batch_max_attempts: int = Field(default=6, ge=1, le=50)
    batch_spool_dir: Path = Field(
        default=PROJECT_ROOT / ".data" / "spool",
        description="Writes Postgres did not take, kept for replay (owner-only: they hold "
        "conversation text).",
    )
    batch_spool_max_bytes: int = Field(
        default=512 * 2**20, ge=2**20,
        description="Total size of pending spool files; past it the oldest are dropped (logged).",
    )
    batch_kept_max_bytes: int = Field(
        default=16 * 2**20, ge=2**16,
        description="Size of rejected.jsonl and of set_aside.jsonl each; past it the oldest "
        "records are dropped (logged).",
    )
    batch_spool_max_age_days: float = Field(
        default=30.0, gt=0,
        description="Spool files and kept records older than this are dropped (logged).",
    )

    # --- Uplift AI -----------------------------------------------------------------------------
    upliftai_api_key: SecretStr | None = None
    upliftai_base_url: str = "wss://api.upliftai.org"
    upliftai_voice_id: str = "v_meklc281"

    # --- LiveKit ---------------------------------------------------------------------------------
    livekit_url: str | None = None
    livekit_api_key: SecretStr | None = None
    livekit_api_secret: SecretStr | None = None
    loop_block_warn_ms: int = Field(
        default=250, ge=0, le=60_000,
        description="LiveKit's event-loop monitor reports a job's loop blocked this long "
        "(its LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS); it wakes every fifth of it, at most every "
        "50 ms; 0 turns it off.",
    )

    # --- Identity and behaviour ---------------------------------------------------------------
    dev_user_id: uuid.UUID = DEFAULT_DEV_USER_ID
    default_companion_name: str = "Veda"
    rag_budget_ms: int = Field(default=150, ge=1, le=5_000)
    rag_top_k: int = Field(default=6, ge=1, le=50)
    rag_min_similarity: float = Field(
        default=0.2, ge=-1, le=1,
        description="Relevance floor: cosine similarity a memory needs unless its keywords match.",
    )
    rag_min_coverage: float = Field(
        default=0.3, ge=0, le=1,
        description="Relevance floor: share of the query's keyword weight a memory must match "
        "when its similarity is below RAG_MIN_SIMILARITY.",
    )
    session_resume_grace_s: int = Field(default=300, ge=0)

    # --- Abuse limits (per user; Redis-backed, per process while Redis is away) ----------------
    tool_calls_per_minute: int = Field(
        default=30, ge=1, le=10_000, description="Tool calls one user may make per minute."
    )
    memory_writes_per_minute: int = Field(
        default=20, ge=1, le=10_000, description="Memory saves one user may make per minute."
    )
    memory_quota_per_user: int = Field(
        default=5_000, ge=1, description="Most explicit memories (current values) one user keeps; "
        "changing a kept one is always allowed. Turns and older values are bounded by retention.",
    )

    # --- Personality (mood, needs, quirks) and proactivity ------------------------------------
    mood_half_life_s: float = Field(
        default=1_800.0, gt=0, description="Time for a mood's distance from its baseline to halve."
    )
    mood_drift_rate: float = Field(
        default=0.25, ge=0, le=1, description="Share of the way to a session's mean mood the "
        "baseline moves at session end."
    )
    mood_drift_max_step: float = Field(
        default=0.05, ge=0, le=0.5, description="Most a baseline coordinate moves per session."
    )
    needs_half_life_s: float = Field(
        default=86_400.0, gt=0, description="Time for a need's satisfaction to halve unattended."
    )
    quirk_half_life_days: float = Field(
        default=14.0, gt=0, description="Time for an unused quirk's strength to halve."
    )
    quirk_min_repeats: int = Field(
        default=3, ge=1, description="Times a pattern must recur in a session to feed a quirk."
    )
    proactive_threshold: float = Field(
        default=0.45, ge=0, le=1, description="Proactive score needed to speak unprompted."
    )
    silence_nudge_after_s: float = Field(
        default=25.0, gt=0, description="Silence before the companion may nudge the user."
    )
    max_nudges_per_session: int = Field(default=2, ge=0, le=20)

    # --- Memory consolidation and maintenance (background only) ---------------------------------
    consolidation_every_turns: int = Field(
        default=20, ge=0, description="Distill memories every N messages of a long session; 0: off."
    )
    consolidation_max_messages: int = Field(
        default=80, ge=2, le=1_000, description="Messages sent to the LLM per consolidation call."
    )
    consolidation_idle_s: int = Field(
        default=900, ge=0, description="A session silent this long is consolidated by the sweep."
    )
    maintenance_in_worker: bool = Field(
        default=True,
        description="Each worker runs the memory maintenance pass (`python manage.py "
        "maintenance` in a child process); false when a scheduler (cron) runs that command.",
    )
    maintenance_first_delay_s: float = Field(
        default=60.0, ge=0, description="Wait after a worker starts before its first pass."
    )
    maintenance_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="Period of a worker's maintenance pass: crash recovery of unconsolidated "
        "sessions, profile summaries left due, decay, merges, contradictions.",
    )
    maintenance_timeout_s: float = Field(
        default=900.0, gt=0, description="A maintenance pass running longer is killed."
    )
    memory_decay_factor: float = Field(
        default=0.98, gt=0, le=1, description="Daily importance decay of unused episodic memories."
    )
    episodic_retention_days: int = Field(
        default=90, ge=1, description="An episodic turn consolidation has distilled expires "
        "after this many days unless a reply used it meanwhile.",
    )
    episodic_max_per_user: int = Field(
        default=10_000, ge=1, description="Most episodic turns kept per user; past it the "
        "least important distilled turns expire first, the oldest first among equals.",
    )
    memory_history_versions: int = Field(
        default=5, ge=0, description="Older values kept per explicit memory key; older ones "
        "expire.",
    )
    log_level: str = Field(
        default="INFO",
        description="Level of every logger, ours and LiveKit's; `--log-level` overrides it.",
    )

    @model_validator(mode="before")
    @classmethod
    def _supabase_keys_are_not_settings(cls, data: Any) -> Any:
        # Read and judged by load_settings (SupabaseKeys); here they must not count as unknown.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if str(k).upper() not in SUPABASE_KEYS}
        return data

    @field_validator("openai_base_url", "redis_url", "livekit_url")
    @classmethod
    def _url_has_scheme(cls, value: str | SecretStr | None, info: Any) -> str | SecretStr | None:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not raw:
            return None
        parsed = urlparse(raw)
        if not parsed.scheme or not (parsed.netloc or parsed.path):
            # Never quote the value: a URL may carry a password or a token.
            name = info.field_name.upper()
            example = _URL_EXAMPLES.get(name, "scheme://host:port")
            raise ValueError(f"{name} must be a full URL such as {example}")
        return value

    @field_validator("database_url")
    @classmethod
    def _dsn_is_postgres(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        scheme = urlparse(value.get_secret_value()).scheme
        if scheme not in ("postgres", "postgresql"):
            raise ValueError(
                "DATABASE_URL must start with postgresql:// (Supabase: Project Settings > "
                "Database > Connection string); unset it to use the embedded Postgres"
            )
        return value

    @field_validator("dev_user_id")
    @classmethod
    def _dev_user_is_issued(cls, value: uuid.UUID) -> uuid.UUID:
        reason = placeholder_reason(value)
        if reason is not None:
            raise ValueError(
                f"DEV_USER_ID must be a random UUID such as uuid.uuid4() makes: {reason}"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("DB_POOL_MIN_SIZE must not exceed DB_POOL_MAX_SIZE")
        if self.tts_provider is TTSProvider.UPLIFTAI and self.upliftai_api_key is None:
            raise ValueError(
                "TTS_PROVIDER=upliftai needs UPLIFTAI_API_KEY; set it or TTS_PROVIDER=openai"
            )
        if self.embedding_provider is EmbeddingProvider.LOCAL and self.embedding_dimensions != 384:
            raise ValueError(
                "EMBEDDING_PROVIDER=local (all-MiniLM-L6-v2) gives 384 dimensions; "
                "set EMBEDDING_DIMENSIONS=384"
            )
        return self

    @property
    def has_llm_credentials(self) -> bool:
        return self.openai_api_key is not None or self.openai_base_url is not None

    def llm_api_key(self) -> str:
        """Key sent to the OpenAI-compatible server; local servers accept any placeholder."""
        if self.openai_api_key is not None:
            return self.openai_api_key.get_secret_value()
        return "not-needed-for-local-server"


class SupabaseKeys(BaseSettings):
    """The keys a Supabase project hands out for its API. The agent does not use them (it talks
    to Postgres with DATABASE_URL); they are read only to say so, and are never settings."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,
    )

    supabase_url: str | None = None
    supabase_service_role_key: SecretStr | None = None
    supabase_anon_key: SecretStr | None = None

    def names(self) -> list[str]:
        """The keys that are set, upper-cased as in the environment."""
        return [name.upper() for name in type(self).model_fields if getattr(self, name)]


def load_settings(**overrides: Any) -> Settings:
    """Parse the environment (and `.env`) once; turn pydantic's report into one clear message.

    Supabase API keys (SUPABASE_URL, ...) without DATABASE_URL stop the app: the person meant
    their Supabase database and would silently get the embedded one. With DATABASE_URL set
    they are ignored, with a warning that names them.
    """
    settings = _parse(**overrides)
    env_file = overrides.get("_env_file", ".env")
    supabase = SupabaseKeys(_env_file=env_file).names()
    if supabase and settings.database_url is None:
        verb = "is" if len(supabase) == 1 else "are"
        raise ConfigError(
            SUPABASE_WITHOUT_DSN.format(names=f"{' and '.join(supabase)} {verb}"),
            suggestion=SUPABASE_DSN_HINT,
        )
    if supabase:
        logger.warning(
            "%s ignored: the agent connects with DATABASE_URL and does not use Supabase API "
            "keys (remove them from its environment to silence this)", ", ".join(supabase),
        )
    return settings


def _parse(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "SETTINGS"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "is not a setting this app knows; remove it from .env or fix its spelling"
            lines.append(f"  {name}: {msg}")
        raise ConfigError(
            "Invalid configuration:\n" + "\n".join(lines),
            suggestion="Fix the variables above in the environment or .env (see .env.example).",
        ) from None
