"""Audio in and out of an AgentSession without a room: a microphone that plays utterances and a
loudspeaker that keeps what the agent says.

They plug into `session.input.audio` / `session.output.audio` before `session.start()`, the way
RoomIO's own input and output do (AgentSession then creates no RoomIO for audio).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from livekit import rtc
from livekit.agents import utils
from livekit.agents.voice.io import AudioInput, AudioOutput, AudioOutputCapabilities

from tests.support.speech import Utterance

FRAME_S = 0.02  # 20 ms frames, as WebRTC delivers them


class Microphone(AudioInput):
    """The session's audio input: each `say` is silence, the utterance, then silence, in
    `frame_s` frames (20 ms unless given) delivered at the pace they were spoken. (The VAD
    alone would take them faster, but the session stamps a turn's start and end from the VAD's
    events in wall time: faster than real time, the end would precede the start and the turn
    would lose its speech metrics.)
    Between utterances the microphone delivers nothing.
    """

    def __init__(self, *, frame_s: float = FRAME_S) -> None:
        super().__init__(label="test-microphone")
        self.frame_s = frame_s
        self._frames = utils.aio.Chan[rtc.AudioFrame]()
        self._due = 0.0  # when the next frame has been spoken (loop time)

    async def __anext__(self) -> rtc.AudioFrame:
        try:
            frame = await self._frames.recv()
        except utils.aio.ChanClosed:
            raise StopAsyncIteration from None
        loop = asyncio.get_running_loop()
        # A frame is heard once all of it has been spoken; a new utterance starts from now.
        self._due = max(self._due, loop.time()) + frame.duration
        await asyncio.sleep(self._due - loop.time())
        return frame

    def say(self, utterance: Utterance, *, before_s: float = 0.5, after_s: float = 1.5) -> None:
        rate = utterance.sample_rate
        pcm = bytes(2 * round(before_s * rate)) + utterance.pcm + bytes(2 * round(after_s * rate))
        step = 2 * round(self.frame_s * rate)
        for start in range(0, len(pcm), step):
            chunk = pcm[start : start + step]
            self._frames.send_nowait(rtc.AudioFrame(chunk, rate, 1, len(chunk) // 2))

    def close(self) -> None:
        self._frames.close()


@dataclass
class Playback:
    """One segment the agent spoke: its frames, and whether it was cut off."""

    frames: list[rtc.AudioFrame] = field(default_factory=list)
    interrupted: bool = False

    @property
    def pcm(self) -> bytes:
        return b"".join(bytes(f.data) for f in self.frames)

    @property
    def duration(self) -> float:
        return sum(f.duration for f in self.frames)


class Loudspeaker(AudioOutput):
    """The session's audio output: keeps every frame it is given, in segments. Nothing plays,
    so a segment has played out as soon as it is flushed; `played` gets it then."""

    def __init__(self) -> None:
        super().__init__(
            label="test-loudspeaker", capabilities=AudioOutputCapabilities(pause=False)
        )
        self.played: asyncio.Queue[Playback] = asyncio.Queue()
        self._current: Playback | None = None

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._current is None:
            self._current = Playback()
            self.on_playback_started(created_at=time.time())
        self._current.frames.append(frame)

    def flush(self) -> None:
        super().flush()
        self._finish(interrupted=False)

    def clear_buffer(self) -> None:
        self._finish(interrupted=True)

    def _finish(self, *, interrupted: bool) -> None:
        segment, self._current = self._current, None
        if segment is None:
            return
        segment.interrupted = interrupted
        self.played.put_nowait(segment)
        # Reported on the next loop turn, as a real sink does once its buffer drains.
        asyncio.get_running_loop().call_soon(
            lambda: self.on_playback_finished(
                playback_position=segment.duration, interrupted=interrupted
            )
        )
