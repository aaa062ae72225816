"""Each room audio frame to its own stream's event loop, not to every stream's of the process.

livekit (the Python SDK, ``livekit.rtc``) hands each event of its native runtime to every
subscriber of one process-wide queue (``FfiQueue.put``): an ``AudioStream`` subscribes to
all ``audio_stream_event`` s and drops, in its own task, those of the other streams. With the
thread executor a voice worker runs its calls in one process, each on its own event loop: at
4 calls every 20 ms frame of every caller woke all 4 loops (``call_soon_threadsafe``, a pipe
write, a task switch), 3 of them for nothing, so the wake-ups grew with the square of the
calls (issue 16's profile: 41 % of the worker's Python samples in the event loops). The
bench's callers (one loop, one stream each) paid the same, 4 deliveries of each frame.

:func:`install` gives the process's queue a table from an audio stream's handle to its own
subscription: a frame event goes to that one queue. Every other event, and an audio event of
a stream not (yet) in the table, is broadcast as before (a routed stream's subscription then
takes its own events only), so a route is only ever a shortcut: nothing depends on it. A
route leaves the table when its stream unsubscribes (end of stream, or the stream
collected); the table is bounded (:data:`MAX_ROUTES`, oldest dropped first: those streams
are then served by the broadcast again).

Version-gated like :mod:`voice.pacing`: only for the ``livekit`` it was read from (1.1.21,
pinned through livekit-agents in pyproject.toml); another version keeps its own queue.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from livekit import rtc
from livekit.rtc import _ffi_client, audio_stream

log = logging.getLogger("agentia.voice")

READ_FROM = "1.1.21"
"""The livekit (Python SDK) version whose event queue this was written against."""
MAX_ROUTES = 1_024
"""Audio streams routed at most in one process (a call has one; the rest are broadcast)."""
AUDIO_EVENT = "audio_stream_event"
_installing = threading.Lock()
"""The thread executor prewarms each call in its own thread: one swap of the queue."""


class RoutedQueue(_ffi_client.FfiQueue[Any]):
    """The SDK's event queue (its subscribers and lock taken over), with audio stream events
    routed by their stream's handle."""

    def __init__(self, old: _ffi_client.FfiQueue[Any]) -> None:
        super().__init__()
        self._lock = old._lock
        self._subscribers = old._subscribers
        self.routes: dict[int, tuple[Any, asyncio.AbstractEventLoop]] = {}
        self.routed = 0
        """Audio events delivered by a route (each would have gone to every stream)."""

    def route(self, handle: int, queue: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Send the audio events of stream ``handle`` to ``queue`` (its subscription) only."""
        with self._lock:
            at = next((i for i, (q, _, _) in enumerate(self._subscribers) if q is queue), None)
            if at is None:
                return  # it already unsubscribed (its stream ended)
            while len(self.routes) >= MAX_ROUTES:
                del self.routes[next(iter(self.routes))]
            self.routes[handle] = (queue, loop)
            # and from the broadcast (a stream not routed yet, or a route dropped), its own
            # events only
            self._subscribers[at] = (queue, loop, _own(handle))

    def put(self, item: Any) -> None:
        if item.WhichOneof("message") == AUDIO_EVENT:
            to = self.routes.get(item.audio_stream_event.stream_handle)
            if to is not None:
                self.routed += 1
                try:
                    to[1].call_soon_threadsafe(to[0].put_nowait, item)
                except RuntimeError:  # its loop is closed: as the SDK, never fail the runtime
                    log.debug("audio event for a closed event loop dropped")
                return
        super().put(item)

    def unsubscribe(self, queue: Any) -> None:
        with self._lock:
            super().unsubscribe(queue)
            for handle in [h for h, (q, _) in self.routes.items() if q is queue]:
                del self.routes[handle]


def _own(handle: int) -> Callable[[Any], bool]:
    def own(ev: Any) -> bool:
        return bool(ev.WhichOneof("message") == AUDIO_EVENT
                    and ev.audio_stream_event.stream_handle == handle)
    return own


def _routed_init(init: Any) -> Any:
    def __init__(self: rtc.AudioStream, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        queue = _ffi_client.FfiClient.instance.queue
        if isinstance(queue, RoutedQueue):
            queue.route(self._ffi_handle.handle, self._ffi_queue, self._loop)
    __init__.routed = True  # type: ignore[attr-defined]
    return __init__


def install() -> bool:
    """Route this process's audio stream events (idempotent; call it in the process that
    runs the rooms, before its streams are made: earlier streams stay broadcast). False when
    the livekit version is not the one this was read from (nothing changed)."""
    if rtc.__version__ != READ_FROM:
        return False
    with _installing:
        client = _ffi_client.FfiClient.instance
        if not isinstance(client._queue, RoutedQueue):
            client._queue = RoutedQueue(client._queue)
            log.info("room audio events routed to their own stream (voice/ffi_routing.py)")
        if not getattr(audio_stream.AudioStream.__init__, "routed", False):
            audio_stream.AudioStream.__init__ = _routed_init(  # type: ignore[method-assign]
                audio_stream.AudioStream.__init__)
    return True


def routed() -> int:
    """Audio events delivered by a route in this process so far (0 when not installed)."""
    queue = _ffi_client.FfiClient.instance.queue
    return queue.routed if isinstance(queue, RoutedQueue) else 0
