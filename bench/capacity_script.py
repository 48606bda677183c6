"""The conversation every session of bench/capacity.py has: what the person says (rendered by
espeak-ng once per run at the rate the room delivers the session's audio, shared by the jobs
and the loopback server as files) and what the scripted model answers. One turn saves a memory
through the `remember` tool, as a person telling the companion a fact would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit import rtc

from tests.support.background_replies import background_reply
from tests.support.speech import Utterance, speak

GREETING = "Hi, it is good to hear from you again."


@dataclass(frozen=True)
class Turn:
    """One spoken turn, the reply it should get, and the tool call made first (if any)."""

    says: str
    reply: str
    tool: dict[str, Any] | None = None


TURNS = (
    Turn("Hi, I had a really long day at work today.",
         "I am sorry to hear that, what made it so long?"),
    Turn("My sister Maya is coming to visit me this weekend.",
         "That sounds lovely, I will remember that Maya is coming.",
         {"tool": "remember",
          "args": {"category": "PERSON", "key": "sister_name", "value": "Maya"}}),
    Turn("We want to go climbing together on Saturday morning.",
         "Climbing with Maya sounds like a great plan."),
    Turn("Do you remember what I told you about my job interview?",
         "You said it went well and that you felt hopeful."),
    Turn("I feel a bit nervous about the new project at work.",
         "That is normal, and you have handled hard projects before."),
    Turn("Thanks, that helps a lot. Talk to you later.",
         "Any time, enjoy the weekend with Maya."),
)
REPLIES = (GREETING, *(t.reply for t in TURNS))
_MANIFEST = "utterances.json"


async def render_utterances(directory: Path, *, sample_rate: int) -> None:
    """Each turn's words as espeak-ng says them, at `sample_rate` (resampled as a room's track
    is, once here rather than in every job), one raw PCM file each, and a manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = []
    for index, turn in enumerate(TURNS):
        utterance = at_rate(await speak(turn.says), sample_rate)
        path = directory / f"turn-{index}.pcm"
        path.write_bytes(utterance.pcm)
        manifest.append({"text": turn.says, "file": path.name, "rate": utterance.sample_rate})
    (directory / _MANIFEST).write_text(json.dumps(manifest))


def at_rate(utterance: Utterance, sample_rate: int) -> Utterance:
    """`utterance` resampled by LiveKit's own resampler (high quality)."""
    if utterance.sample_rate == sample_rate:
        return utterance
    resampler = rtc.AudioResampler(
        utterance.sample_rate, sample_rate, quality=rtc.AudioResamplerQuality.HIGH
    )
    pcm = utterance.pcm
    frames = resampler.push(rtc.AudioFrame(pcm, utterance.sample_rate, 1, len(pcm) // 2))
    frames += resampler.flush()
    return Utterance(utterance.text, b"".join(bytes(f.data) for f in frames), sample_rate)


def load_utterances(directory: Path) -> list[Utterance]:
    """The utterances `render_utterances` wrote, in turn order."""
    manifest = json.loads((directory / _MANIFEST).read_text())
    return [
        Utterance(entry["text"], (directory / entry["file"]).read_bytes(), entry["rate"])
        for entry in manifest
    ]


def _messages_after_last_user(body: dict[str, Any]) -> tuple[str, bool]:
    """The last user message's text, and whether a tool result follows it."""
    messages = body.get("messages") or []
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            content = messages[index].get("content")
            text = content if isinstance(content, str) else ""
            answered = any(m.get("role") == "tool" for m in messages[index + 1 :])
            return text, answered
    return "", False


def scripted_reply(body: dict[str, Any]) -> Any:
    """The model's side of the conversation, as a chat step of the loopback server: background
    calls (summary, profile, consolidation) as the tests answer them; a spoken turn's reply
    (after its tool call, for the turn that has one); the greeting otherwise."""
    background = background_reply(body)
    if background is not None:
        return background
    if not body.get("stream"):
        return "Noted."
    text, tool_answered = _messages_after_last_user(body)
    for turn in TURNS:
        if turn.says == text:
            return turn.tool if turn.tool is not None and not tool_answered else turn.reply
    return GREETING
