"""Real speech for tests: sentences rendered by espeak-ng, as 16-bit mono PCM.

espeak-ng is a Debian package (`scripts/setup.sh --test` installs it). Its output is the same
for the same text and options, so a test can say exactly which audio it spoke.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
from dataclasses import dataclass

import numpy as np

ESPEAK_VOICE = "en-us"
ESPEAK_WORDS_PER_MINUTE = 175
ESPEAK_SAMPLE_RATE = 22_050
# Below this a sample is taken as silence when trimming (full scale is 32767).
_QUIET = 64


class SpeechUnavailable(RuntimeError):
    """espeak-ng is missing or failed."""


@dataclass(frozen=True)
class Utterance:
    """One spoken sentence: its text and its audio (16-bit little-endian mono PCM)."""

    text: str
    pcm: bytes
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate

    @property
    def voiced(self) -> bytes:
        """The audio from the first to the last sound, without espeak's silent edges."""
        samples = np.frombuffer(self.pcm, dtype="<i2")
        loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > _QUIET)
        if loud.size == 0:
            return b""
        return samples[loud[0] : loud[-1] + 1].tobytes()

    @property
    def voiced_duration(self) -> float:
        return len(self.voiced) / 2 / self.sample_rate

    def resampled(self, sample_rate: int) -> Utterance:
        """The same sentence at another rate (linear interpolation: fine for tests)."""
        if sample_rate == self.sample_rate:
            return self
        samples = np.frombuffer(self.pcm, dtype="<i2").astype(np.float64)
        count = round(len(samples) * sample_rate / self.sample_rate)
        positions = np.arange(count) * self.sample_rate / sample_rate
        converted = np.interp(positions, np.arange(len(samples)), samples)
        pcm = np.clip(np.round(converted), -32768, 32767).astype("<i2").tobytes()
        return Utterance(self.text, pcm, sample_rate)


@dataclass(frozen=True)
class Wav:
    """What a WAV file's header says, and its samples."""

    sample_rate: int
    channels: int
    bits: int
    pcm: bytes

    @property
    def duration(self) -> float:
        return len(self.pcm) / (self.bits // 8) / self.channels / self.sample_rate


def parse_wav(data: bytes) -> Wav:
    """Read a RIFF/WAVE file's `fmt ` and `data` chunks; ValueError if it is not PCM WAV."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file (no RIFF/WAVE header)")
    offset, fmt = 12, None
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = data[offset + 8 : offset + 8 + size]  # a streamed file may claim more than it has
        if chunk == b"fmt ":
            if len(body) < 16:
                raise ValueError("WAV fmt chunk is too short")
            fmt = struct.unpack_from("<HHIIHH", body)
        elif chunk == b"data":
            if fmt is None:
                raise ValueError("WAV data chunk before its fmt chunk")
            audio_format, channels, rate, _, _, bits = fmt
            if audio_format != 1 or bits not in (8, 16, 24, 32) or channels < 1 or rate < 1:
                raise ValueError(f"unsupported WAV encoding (format {audio_format}, {bits} bits)")
            return Wav(sample_rate=rate, channels=channels, bits=bits, pcm=body)
        offset += 8 + size + (size & 1)
    raise ValueError("WAV file without a data chunk")


async def speak(text: str, *, sample_rate: int | None = None) -> Utterance:
    """`text` as espeak-ng says it (22.05 kHz, or resampled to `sample_rate`)."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise SpeechUnavailable(
            "espeak-ng is not installed; run scripts/setup.sh --test "
            "(or apt-get install espeak-ng)"
        )
    process = await asyncio.create_subprocess_exec(
        binary, "-v", ESPEAK_VOICE, "-s", str(ESPEAK_WORDS_PER_MINUTE), "--stdout", text,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise SpeechUnavailable(f"espeak-ng failed ({process.returncode}): {err.decode()[:200]}")
    wav = parse_wav(out)
    if (wav.channels, wav.bits) != (1, 16):
        raise SpeechUnavailable(f"espeak-ng wrote {wav.channels} channel(s) of {wav.bits} bits")
    utterance = Utterance(text, wav.pcm, wav.sample_rate)
    return utterance if sample_rate is None else utterance.resampled(sample_rate)
