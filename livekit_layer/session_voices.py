"""Closing a session's TTS instances, which livekit-agents 1.8.9 leaves open.

Neither AgentSession nor AgentActivity closes a TTS, not the session's and not an agent's own.
A companion with a voice of its own builds one (`session_models.companion_voice`), with its own
Uplift socket and OpenAI client, so without this every hand-off would leave a socket open until
the process ends.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import Agent, AgentSession, llm, tts
from livekit.agents.voice.events import ConversationItemAddedEvent

from core.tasks import BackgroundTasks


class SessionVoices:
    """Closes each agent's own TTS when the session has handed off away from that agent, and
    the rest (the session's, the last agent's) when the job ends.

    The framework announces a hand-off (an `AgentHandoff` item) only after the old agent's
    activity, and all the speech it had queued, has ended: from then on nothing uses its TTS.

    Args:
        session: the job's session; watched from construction, before it starts.
    """

    def __init__(self, session: AgentSession[Any]) -> None:
        self._session = session
        self._agent: Agent | None = None  # the agent talking, as of the last hand-off
        self._closed: list[tts.TTS] = []
        self._closing = BackgroundTasks("tts")
        session.on("conversation_item_added", self._on_item)

    def _on_item(self, event: ConversationItemAddedEvent) -> None:
        if not isinstance(event.item, llm.AgentHandoff):
            return
        previous, self._agent = self._agent, self._session.current_agent
        if previous is not None and previous is not self._agent:
            self._close_own_voice(previous, still_used=self._agent.tts)

    def _close_own_voice(self, agent: Agent, *, still_used: object = None) -> None:
        voice = agent.tts
        # The session's TTS serves every agent without one of its own, until the job ends.
        if isinstance(voice, tts.TTS) and voice is not still_used and voice is not (
            self._session.tts
        ):
            self._close(voice)

    def _close(self, voice: tts.TTS) -> None:
        if any(voice is closed for closed in self._closed):
            return
        self._closed.append(voice)
        self._closing.spawn(voice.aclose())

    async def aclose(self) -> None:
        """The job's end: close the session (a no-op if it is closed) so that nothing speaks
        any more, then every TTS still open. Safe to call more than once."""
        await self._session.aclose()
        self._session.off("conversation_item_added", self._on_item)
        agents = [self._agent]
        try:
            agents.append(self._session.current_agent)
        except RuntimeError:
            pass  # the session never started
        for agent in agents:
            if agent is not None:
                self._close_own_voice(agent)
        if self._session.tts is not None:
            self._close(self._session.tts)
        await self._closing.drain()
