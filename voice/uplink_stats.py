"""The caller's audio as the agent receives it: WebRTC's jitter buffer on the caller's track.

At four calls on a shared 2-core box the caller's end of speech → the VAD's end grew from
~150 ms to 0.3-2 s while the VAD kept up with what it received (docs/voice.md, "Session 17"):
the audio reached it late. Each call reads its caller's audio track's receive statistics
every :data:`EVERY_S` (:class:`UplinkWatch`) and logs the last reading when it ends: ``caller
audio jitter buffer of session …: {'delay_ms', 'target_ms', 'minimum_ms'}`` (WebRTC's
inbound-rtp ``jitterBufferDelay`` / ``…TargetDelay`` / ``…MinimumDelay``, each averaged over the
samples played out so far: ms). ``loadtest.bench_voice`` reports them as ``uplink_jitter_buffer``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livekit import rtc

log = logging.getLogger("agentia.voice")

EVERY_S = 2.0
"""Seconds between two readings: one stats request a call every 2 s (the call's own event
loop; a reading is a few hundred bytes through LiveKit's FFI)."""


async def jitter_buffer(track: rtc.Track | None) -> dict[str, float]:
    """A received track's jitter buffer so far (ms, averaged over the samples it played
    out); ``{}`` before it has any."""
    for st in await track.get_stats() if track is not None else []:
        if st.HasField("inbound_rtp"):
            inb = st.inbound_rtp.inbound
            n = max(1, inb.jitter_buffer_emitted_count)
            return {"delay_ms": round(1000 * inb.jitter_buffer_delay / n, 1),
                    "target_ms": round(1000 * inb.jitter_buffer_target_delay / n, 1),
                    "minimum_ms": round(1000 * inb.jitter_buffer_minimum_delay / n, 1)}
    return {}


def caller_track(room: rtc.Room, identity: str) -> rtc.Track | None:
    """The audio track ``identity`` publishes in ``room``, if subscribed."""
    p = room.remote_participants.get(identity)
    for pub in p.track_publications.values() if p is not None else []:
        if pub.kind == rtc.TrackKind.KIND_AUDIO and pub.track is not None:
            return pub.track
    return None


class UplinkWatch:
    """Reads the caller's jitter buffer every :data:`EVERY_S` while the call lasts
    (:meth:`run`, a task of the call); :attr:`last` is the newest reading."""

    def __init__(self, room: rtc.Room, identity: str) -> None:
        self.room, self.identity = room, identity
        self.last: dict[str, Any] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(EVERY_S)
            try:
                got = await jitter_buffer(caller_track(self.room, self.identity))
            except Exception as exc:  # a track going away mid-request: the next reading
                log.debug("no jitter-buffer reading of %s: %s", self.identity, exc)
                continue
            if got:
                self.last = got
