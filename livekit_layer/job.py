"""One job's bookkeeping around its session: which companion talks now, the job's log fields,
and the end of the job (the one sequence the agent's shutdown callback runs)."""

from __future__ import annotations

import logging
from typing import Any

from livekit.agents import AgentSession, get_job_context

from core.deadline import Deadline, within
from livekit_layer.companion_session import CompanionSession
from livekit_layer.session_voices import SessionVoices
from services.composition import Services

logger = logging.getLogger(__name__)


def talking_companion(session: AgentSession[Any] | None) -> CompanionSession | None:
    """The session of the companion `session` runs now (None before it started)."""
    if session is None:
        return None
    try:
        agent = session.current_agent
    except RuntimeError:
        return None
    talking = getattr(agent, "companion", None)
    return talking if isinstance(talking, CompanionSession) else None


def log_fields_for(companion: CompanionSession) -> None:
    """Tag the job's log lines with the companion and conversation talking now."""
    try:
        ctx = get_job_context()
    except RuntimeError:
        return  # not inside a job (tests drive sessions directly)
    ctx.log_context_fields = {
        **ctx.log_context_fields, "companion_id": str(companion.companion.id),
        "session_id": str(companion.conversation.id),
    }


async def end_job(
    services: Services,
    *,
    opened: CompanionSession | None,
    session: AgentSession[Any] | None,
    voices: SessionVoices | None = None,
    deadline: Deadline | None = None,
) -> None:
    """The end of a job, in this order: the session and its TTS instances close (`voices`);
    the conversation the job opened and the one talking now (another companion may have been
    called by name since) close, with their summaries; then the services, whose pool the
    summaries need and whose HTTP client OpenAI TTS used. Closing anything twice is a no-op.

    All of it ends by `deadline`, by default JOB_SHUTDOWN_BUDGET_S from now (LiveKit kills
    the process 10 s after asking the job to stop). This is the one place that knows it: the
    batcher and the pool learn it first (`Services.finish_by`), so every database wait from
    here on (those under way included) ends in time to spool what the database has not
    taken; every step gets what is left.
    """
    if deadline is None:
        deadline = Deadline.after(services.settings.job_shutdown_budget_s)
    work = services.finish_by(deadline)
    if voices is not None:
        try:
            async with within(work):
                await voices.aclose()
        except TimeoutError:
            logger.warning("closing the voices ran out of time at the shutdown deadline")
    for talking in (opened, talking_companion(session)):
        if talking is not None:
            await talking.close(wait=True, deadline=work)
    await services.aclose(deadline)
