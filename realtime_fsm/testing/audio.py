"""Audio helpers for the simulator: G.711 codecs, test tones, energy, and audio tags.

The fake OpenAI server has to *measure* the caller's audio (its VAD works on energy, like the
real server's detector works on sound, not on any flag) and the fake Twilio caller has to *make*
audible audio.  Both sides speak G.711 mu-law at 8 kHz, one byte per sample, so everything here is
pure Python over ``bytes``: no ``audioop`` (deprecated, gone in Python 3.13), no numpy.

**Audio tags.**  Every audio delta the fake server generates starts with a small tag (12 bytes)
that names the response it belongs to (a per-server ordinal, see
:attr:`~realtime_fsm.testing.fake_realtime.ResponseRecord.tag`) and the chunk number.  A bridge
that passes payloads through unchanged (mu-law in, mu-law out, as Twilio needs) carries the tags to
the caller, so a test can ask "did the caller hear any audio of the cancelled response after the
``clear``?" by scanning what the caller received.  The tag's magic bytes are full-scale samples a
test tone never reaches, and a checksum rejects accidental matches; a bridge that transcodes the
audio destroys the tags (and nothing else).
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterator

import attrs

__all__ = [
    "MULAW_SILENCE",
    "TAG_SIZE",
    "AudioTag",
    "TagScanner",
    "STAMP_SIZE",
    "alaw_decode",
    "bytes_per_ms",
    "find_audio_tags",
    "make_audio_tag",
    "make_time_stamp",
    "mulaw_decode",
    "mulaw_encode",
    "mulaw_rms_level",
    "pcm16_decode",
    "read_time_stamp",
    "rms_level",
    "silence",
    "tone",
]

#: One byte of mu-law silence.  Twilio pads with it and so does the fake caller when not speaking.
MULAW_SILENCE = 0xFF

_BIAS = 0x84
_CLIP = 32635


def _ulaw_to_linear(byte: int) -> int:
    u = ~byte & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    sample = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return -sample if sign else sample


def _linear_to_ulaw(sample: int) -> int:
    sign = 0
    if sample < 0:
        sign = 0x80
        sample = -sample
    sample = min(sample, _CLIP) + _BIAS
    exponent = sample.bit_length() - 8
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _alaw_to_linear(byte: int) -> int:
    a = byte ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


_ULAW_TABLE: tuple[int, ...] = tuple(_ulaw_to_linear(b) for b in range(256))
_ALAW_TABLE: tuple[int, ...] = tuple(_alaw_to_linear(b) for b in range(256))


def mulaw_decode(data: bytes) -> list[int]:
    """G.711 mu-law bytes to 16-bit linear samples (0xFF and 0x7F both decode to 0)."""
    table = _ULAW_TABLE
    return [table[b] for b in data]


def alaw_decode(data: bytes) -> list[int]:
    """G.711 A-law bytes to 16-bit linear samples."""
    table = _ALAW_TABLE
    return [table[b] for b in data]


def pcm16_decode(data: bytes) -> list[int]:
    """Little-endian signed 16-bit PCM (the Realtime API's ``pcm16`` / ``audio/pcm``) to samples.

    A trailing odd byte is ignored rather than rejected: the VAD only needs an energy estimate.
    """
    samples = array("h")
    samples.frombytes(data[: len(data) - (len(data) % 2)])
    if sys.byteorder == "big":  # pragma: no cover - the wire format is little-endian
        samples.byteswap()
    return samples.tolist()


def mulaw_encode(samples: list[int]) -> bytes:
    """16-bit linear samples to G.711 mu-law bytes (values are clipped to the codec's range)."""
    return bytes(_linear_to_ulaw(int(s)) for s in samples)


def rms_level(samples: list[int]) -> float:
    """Root-mean-square level of linear samples, normalised so full scale is 1.0.

    The fake VAD compares this with ``FakeRealtimeConfig.vad_energy_threshold``: mu-law silence
    measures exactly 0.0, the fake caller's speech about 0.2.
    """
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768.0


_ULAW_SQUARES: tuple[int, ...] = tuple(v * v for v in _ULAW_TABLE)
_LEVEL_CACHE: dict[bytes, float] = {}
_LEVEL_CACHE_SIZE = 4096


def mulaw_rms_level(data: bytes) -> float:
    """:func:`rms_level` of ``mulaw_decode(data)``, without building the sample list.

    The fake VAD measures every 10 ms of every call; with many concurrent calls (the load
    benchmark) the list of decoded samples was most of its cost.  Same sum of squares, same
    result.  Levels are also remembered by content (exact: a pure function of the bytes): a
    caller's frames are mostly the same silence or tone, so most 10 ms pieces repeat."""
    if not data:
        return 0.0
    key = bytes(data)  # bytes(bytes) is the same object; a bytearray is copied (hashable)
    level = _LEVEL_CACHE.get(key)
    if level is None:
        level = math.sqrt(sum(map(_ULAW_SQUARES.__getitem__, key)) / len(key)) / 32768.0
        if len(_LEVEL_CACHE) >= _LEVEL_CACHE_SIZE:
            _LEVEL_CACHE.clear()  # time-stamped pieces never repeat: start over, don't grow
        _LEVEL_CACHE[key] = level
    return level


def bytes_per_ms(audio_format: str) -> int:
    """Bytes per millisecond of a Realtime audio format (canonical beta spelling).

    ``g711_ulaw`` / ``g711_alaw``: 8 kHz, one byte a sample.  ``pcm16``: 24 kHz, two bytes.
    """
    return 48 if audio_format == "pcm16" else 8


def _tone_samples(n: int, rate: int, freq: float, level: float, phase0: int = 0) -> list[int]:
    amp = max(0.0, min(1.0, level)) * 32767
    return [int(amp * math.sin(2 * math.pi * freq * (phase0 + i) / rate)) for i in range(n)]


def tone(
    ms: int, *, audio_format: str = "g711_ulaw", freq: float = 400.0, level: float = 0.3
) -> bytes:
    """``ms`` milliseconds of an audible sine tone in ``audio_format``.

    400 Hz fits exactly eight periods in 20 ms, so 20 ms frames can be repeated without clicks.
    ``level`` is the peak amplitude as a fraction of full scale; the default measures about 0.2
    RMS, far above the fake VAD's default threshold, and never reaches the audio-tag magic bytes.
    """
    if audio_format == "pcm16":
        n = ms * 24
        out = array("h", _tone_samples(n, 24000, freq, level))
        if sys.byteorder == "big":  # pragma: no cover
            out.byteswap()
        return out.tobytes()
    # A-law output is approximated by mu-law bytes: nothing in the simulator needs an A-law
    # encoder, and mu-law bytes read as A-law are still loud.
    return mulaw_encode(_tone_samples(ms * 8, 8000, freq, level))


def silence(ms: int, *, audio_format: str = "g711_ulaw") -> bytes:
    """``ms`` milliseconds of digital silence in ``audio_format``."""
    if audio_format == "pcm16":
        return bytes(ms * 48)
    if audio_format == "g711_alaw":
        return bytes([0xD5]) * (ms * 8)
    return bytes([MULAW_SILENCE]) * (ms * 8)


# --- audio tags -------------------------------------------------------------------------------

_TAG_MAGIC = b"\x00\x80\x00\x80"
#: Length in bytes of the tag the fake server writes at the start of every audio delta.
TAG_SIZE = 12


@attrs.frozen
class AudioTag:
    """What a tag says: which response (``ordinal``) and which of its audio deltas (``chunk``)."""

    ordinal: int
    chunk: int


def _checksum(body: bytes) -> bytes:
    total = sum(body) & 0xFFFF
    return bytes([(total >> 8) ^ 0xA5, (total & 0xFF) ^ 0x5A])


def make_audio_tag(ordinal: int, chunk: int) -> bytes:
    """The 12 tag bytes for ``(ordinal, chunk)``: magic, ordinal (u32 BE), chunk (u16 BE), check."""
    body = (ordinal & 0xFFFFFFFF).to_bytes(4, "big") + (chunk & 0xFFFF).to_bytes(2, "big")
    return _TAG_MAGIC + body + _checksum(body)


def _parse_at(data: bytes, i: int) -> AudioTag | None:
    if data[i : i + 4] != _TAG_MAGIC or i + TAG_SIZE > len(data):
        return None
    body = data[i + 4 : i + 10]
    if data[i + 10 : i + 12] != _checksum(body):
        return None
    return AudioTag(int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big"))


def find_audio_tags(data: bytes) -> list[AudioTag]:
    """Every well-formed tag in ``data``, in order (use :class:`TagScanner` for a stream)."""
    return [tag for _pos, tag in _iter_tags(data)]


def _iter_tags(data: bytes) -> Iterator[tuple[int, AudioTag]]:
    i = data.find(_TAG_MAGIC)
    while i != -1:
        tag = _parse_at(data, i)
        if tag is not None:
            yield i, tag
            i = data.find(_TAG_MAGIC, i + TAG_SIZE)
        else:
            i = data.find(_TAG_MAGIC, i + 1)


class TagScanner:
    """Finds tags in audio that arrives in pieces, even when a tag straddles two pieces.

    Feed the pieces in order; :meth:`feed` returns the tags that piece completes, so a caller can
    stamp them with the time the piece arrived (or was played).
    """

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> list[AudioTag]:
        """Tags completed by ``data`` (a tag split across pieces is reported with the later one)."""
        buf = self._tail + data
        found: list[AudioTag] = []
        last_end = 0
        for pos, tag in _iter_tags(buf):
            found.append(tag)
            last_end = pos + TAG_SIZE
        # Keep enough bytes to complete a tag that starts near the end of this piece.
        keep_from = max(last_end, len(buf) - (TAG_SIZE - 1))
        self._tail = buf[keep_from:]
        return found

    def reset(self) -> None:
        """Forget a partial tag (after a discontinuity such as a ``clear``)."""
        self._tail = b""


# --- time stamps ------------------------------------------------------------------------------

#: Mu-law bytes 0xF0-0xFF decode to -120..0: a stamp is inaudible and far below the fake VAD's
#: threshold, so stamping silence keeps it silence and stamping speech keeps it speech.
_STAMP_MAGIC = b"\xf5\xfa\xf5\xfa"
_STAMP_NIBBLES = 20  # 4 for the source id, 16 for the nanoseconds
#: Length in bytes of a time stamp (see :func:`make_time_stamp`).
STAMP_SIZE = len(_STAMP_MAGIC) + _STAMP_NIBBLES
_HEX_DIGITS = b"0123456789abcdef"
_STAMP_HEX = b"%%0%dx" % _STAMP_NIBBLES
_HEX_TO_STAMP = bytes.maketrans(_HEX_DIGITS, bytes(range(0xF0, 0x100)))
_STAMP_TO_HEX = bytes(_HEX_DIGITS[b & 0xF] if b >= 0xF0 else ord("g") for b in range(256))


def make_time_stamp(source: int, ns: int) -> bytes:
    """Bytes that carry ``source`` (u16) and a ``time.monotonic_ns()`` reading (u64) in mu-law
    audio, for measuring latency through a bridge that passes payloads through untouched.

    Written over the start of a frame by the fake caller (``FakeCallerConfig.stamp_source``) and
    after the audio tag by the fake server (``FakeRealtimeConfig.stamp_audio``); the reader runs
    in the same process, so the two clock readings compare."""
    value = ((source & 0xFFFF) << 64) | (ns & 0xFFFFFFFFFFFFFFFF)
    # One nibble a byte (0xF0 | nibble): the hex digits of the value, translated.  Every frame
    # of every call is stamped in the load benchmark, so this avoids a per-nibble Python loop.
    return _STAMP_MAGIC + (_STAMP_HEX % value).translate(_HEX_TO_STAMP)


def read_time_stamp(data: bytes, offset: int = 0) -> tuple[int, int] | None:
    """``(source, ns)`` of a stamp at ``offset`` in ``data``, or ``None`` if there is none."""
    end = offset + STAMP_SIZE
    if len(data) < end or data[offset : offset + len(_STAMP_MAGIC)] != _STAMP_MAGIC:
        return None
    # Back to hex digits; a byte outside 0xF0-0xFF becomes "g", which int() rejects.
    try:
        value = int(data[offset + len(_STAMP_MAGIC) : end].translate(_STAMP_TO_HEX), 16)
    except ValueError:
        return None
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF
