"""One job of bench/capacity.py: runs in a LiveKit job process, after the product's prewarm.

`entrypoint` is agent.entrypoint's sequence (build_services, open_session, build_session,
SessionVoices, attach, CompanionAgent, end_job on shutdown) with two differences: the user
comes from the job's metadata instead of a room participant, and the session's audio goes
through a microphone and a loudspeaker (tests/support/audio_io.py) instead of a room. The
microphone delivers what the room would: audio at the rate and in the frame size the product
asks the room for (`room_input`). Over that audio the person says the script's turns at the
pace they are spoken, each after the previous reply has been heard; per turn it records when
the voice ended and when the reply's first audio frame came out, what the session's metrics
say, and what was answered.

Results go to the JSON file the job's metadata names; the end of the job (end_job, under
LiveKit's shutdown) appends its duration in a second file.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession, JobContext, llm
from livekit.agents.voice import room_io
from pydantic import SecretStr

from agent import CompanionAgent
from bench.capacity_script import GREETING, TURNS, Turn, load_utterances
from livekit_layer.companion_session import CompanionSession
from livekit_layer.job import end_job, log_fields_for
from livekit_layer.session_models import build_session, room_options
from livekit_layer.session_open import open_session
from livekit_layer.session_voices import SessionVoices
from services.composition import build_services
from tests.support.audio_io import Loudspeaker, Microphone, Playback
from tests.support.speech import Utterance

TURN_TIMEOUT_S = 20.0  # a turn with no reply by then has failed
THINK_S = 1.0  # after a reply has played, before the person speaks again
BEFORE_S, AFTER_S = 0.5, 1.5  # silence the microphone sends around each utterance


def room_input() -> room_io.AudioInputOptions:
    """The form in which a room delivers the session's audio: what agent.py asks it for."""
    audio = room_options().audio_input
    return audio if isinstance(audio, room_io.AudioInputOptions) else room_io.AudioInputOptions()


class TimedMicrophone(Microphone):
    """The test microphone, also telling when the last voiced sound of each `say` has been
    delivered to the session (wall clock): the end of speech a reply's latency counts from."""

    def __init__(self) -> None:
        super().__init__(frame_s=room_input().frame_size_ms / 1000)
        self._queued = 0
        self._delivered = 0
        self._marks: dict[int, tuple[asyncio.Future[float], float]] = {}

    def say_timed(self, utterance: Utterance) -> asyncio.Future[float]:
        rate = utterance.sample_rate
        step = 2 * round(self.frame_s * rate)
        lead = 2 * round(BEFORE_S * rate)
        voiced = utterance.voiced
        end = lead + utterance.pcm.find(voiced) + len(voiced)  # byte after the last sound
        total = lead + len(utterance.pcm) + 2 * round(AFTER_S * rate)
        frame = (end - 1) // step
        after_sound_s = ((frame + 1) * step - end) / 2 / rate  # rest of that frame
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._marks[self._queued + frame] = (done, after_sound_s)
        self._queued += -(-total // step)
        self.say(utterance, before_s=BEFORE_S, after_s=AFTER_S)
        return done

    async def __anext__(self) -> Any:
        frame = await super().__anext__()
        mark = self._marks.pop(self._delivered, None)
        self._delivered += 1
        if mark is not None and not mark[0].done():
            mark[0].set_result(time.time() - mark[1])
        return frame


def _metrics(message: llm.ChatMessage) -> dict[str, float]:
    return {k: float(v) for k, v in dict(message.metrics).items() if isinstance(v, int | float)}


class Call:
    """The person's side of one session: speaks turns, hears and times the replies."""

    def __init__(self, session: AgentSession[Any]) -> None:
        self.microphone = TimedMicrophone()
        self.loudspeaker = Loudspeaker()
        session.input.audio = self.microphone
        session.output.audio = self.loudspeaker
        self.replies: asyncio.Queue[llm.ChatMessage] = asyncio.Queue()
        self.user_metrics: dict[str, float] = {}
        self.audio_starts: list[float] = []
        self.listening = asyncio.Event()
        self.answered: set[str] = set()  # replies of turns already over
        session.on("conversation_item_added", self._on_item)
        session.on("agent_state_changed", self._on_state)
        self.loudspeaker.on("playback_started", lambda ev: self.audio_starts.append(ev.created_at))

    def _on_item(self, event: Any) -> None:
        item = event.item
        if not isinstance(item, llm.ChatMessage):
            return
        if item.role == "user":
            self.user_metrics = _metrics(item)
        elif item.role == "assistant":
            self.replies.put_nowait(item)

    def _on_state(self, event: Any) -> None:
        if event.new_state == "listening":
            self.listening.set()
        else:
            self.listening.clear()

    async def heard(self, expected: str | None = None) -> tuple[llm.ChatMessage, Playback, int]:
        """The next reply (the next one saying `expected`, when given) and its audio, once the
        companion listens again; and how many earlier turns' late replies came first."""
        late = 0
        async with asyncio.timeout(TURN_TIMEOUT_S):
            while True:
                reply = await self.replies.get()
                played = await self.loudspeaker.played.get()
                if expected is None or (reply.text_content or "") not in self.answered:
                    break
                late += 1  # the reply to a turn that had already given up waiting
            await self.listening.wait()
        return reply, played, late

    def unexpected(self) -> int:
        """Replies and audio nobody asked for (nudges, apologies): dropped, and counted."""
        count = self.replies.qsize()
        for queue in (self.replies, self.loudspeaker.played):
            while not queue.empty():
                queue.get_nowait()
        return count

    async def turn(self, turn: Turn, utterance: Utterance) -> dict[str, Any]:
        extra = self.unexpected()
        self.user_metrics = {}
        voice_ended = self.microphone.say_timed(utterance)
        outcome: dict[str, Any] = {"says": turn.says, "unexpected_before": extra}
        try:
            reply, played, late = await self.heard(turn.reply)
        except TimeoutError:
            self.answered.add(turn.reply)
            return {**outcome, "ok": False, "why": f"no reply within {TURN_TIMEOUT_S:.0f} s"}
        self.answered.add(turn.reply)
        outcome["late_replies"] = late
        ended = voice_ended.result() if voice_ended.done() else None
        first = next((t for t in self.audio_starts if ended is not None and t >= ended), None)
        text = reply.text_content or ""
        why = (
            "wrong reply" if text != turn.reply
            else "no audio" if not played.frames
            else "audio cut off" if played.interrupted
            else "unmeasured" if first is None
            else None
        )
        outcome.update(
            ok=why is None, why=why, reply=text, voice_ended_at=ended, first_audio_at=first,
            e2e_ms=(first - ended) * 1000 if first is not None and ended is not None else None,
            played_s=played.duration, user_metrics=self.user_metrics,
            reply_metrics=_metrics(reply),
        )
        await asyncio.sleep(played.duration + THINK_S)  # listening to it, then thinking
        return outcome

    async def converse(self, utterances: list[Utterance]) -> dict[str, Any]:
        try:
            greeting, played, _ = await self.heard()
            greeted = (greeting.text_content or "") == GREETING
        except TimeoutError:
            greeted = False
        else:
            await asyncio.sleep(played.duration + THINK_S)
        self.answered.add(GREETING)
        turns = [await self.turn(t, u) for t, u in zip(TURNS, utterances, strict=True)]
        return {"greeted": greeted, "turns": turns, "unexpected_after": self.unexpected()}


def _write(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, default=str))


async def entrypoint(ctx: JobContext) -> None:
    """The job: as agent.entrypoint, for the user and with the audio the metadata gives."""
    plan = json.loads(ctx.job.metadata)
    cpu_started, started = time.process_time(), time.time()
    modules = set(sys.modules)
    # The job's API key tells the loopback server whose requests it is answering.
    settings = ctx.proc.userdata["settings"].model_copy(
        update={"openai_api_key": SecretStr(plan["key"])}
    )
    services = await build_services(
        settings, local_embedder=ctx.proc.userdata.get("embedder"), tls=ctx.proc.userdata.get("tls")
    )
    companion: CompanionSession | None = None
    session: AgentSession[Any] | None = None
    voices: SessionVoices | None = None

    async def end_of_job() -> None:
        ending = time.perf_counter()
        await end_job(services, opened=companion, session=session, voices=voices)
        _write(plan["out"] + ".end", {"end_job_s": time.perf_counter() - ending})

    ctx.add_shutdown_callback(end_of_job)
    services_ms = (time.time() - started) * 1000
    companion = await open_session(
        services, user_id=uuid.UUID(plan["user_id"]), room=ctx.job.room.name
    )
    log_fields_for(companion)
    session = build_session(companion, ctx.proc.userdata["vad"])
    voices = SessionVoices(session)
    companion.attach(session)
    session.on("close", lambda _: ctx.shutdown(reason="session closed"))
    call = Call(session)
    utterances = await asyncio.to_thread(load_utterances, Path(plan["speech_dir"]))
    await session.start(agent=CompanionAgent(companion))
    talked = await call.converse(utterances)
    _write(plan["out"], {
        **talked, "job": plan["index"], "pid": os.getpid(),
        "cpu_s": time.process_time() - cpu_started, "wall_s": time.time() - started,
        "services_ms": services_ms, "bootstrap_ms": companion.bootstrap_ms,
        "memory_lookup_ms": services.rag.context_ms.values(),
        "memory_wait_ms": companion.turn_ms.values(),
        "retrieval": services.retrieval.stats(), "rag": services.rag.stats(),
        "mood": services.personality.stats(), "session": companion.stats(),
        # Imported on the job's event loop (first use), not in the forkserver.
        "imported": sorted(set(sys.modules) - modules),
    })
    ctx.shutdown(reason="conversation over")
