"""The pure offset tracker: exactly-once, in-order delivery of a session's events (no I/O).

Tests drive it with plain dicts, without an event loop or a socket.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from agentia_client.values import Event, Reset


def _noop_event(_: Event) -> None:
    return None


def _noop_reset(_: Reset) -> None:
    return None


class Tracker:
    """Exactly-once, in-order delivery of a session's events across reconnects (no I/O).

    It implements section 6 of docs/protocol.md with two cursors: ``last``, the highest
    offset applied (every lower one applied too; ``on_apply`` is called once per offset, in
    order), and the application's queue, which may fall behind ``last`` when it is full
    (``app_next`` is then the first offset it lacks). ``need_resume`` says that the owner
    should send ``resume`` with :meth:`resume_args`: after a gap, after a resume that ended
    short, or when a queue that overflowed has room again.

    ``chunk`` and ``partial`` frames (:meth:`on_stream`: no offset) go to ``on_stream`` as
    they come, except while a resume is answered: then they wait, in arrival order, and
    follow the replayed events (section 6, steps 2 and 6). With ``stream_to_app`` they are
    queued for the application too, unless its queue is full or behind (they are never
    replayed; the turn's ending event carries the whole text).
    """

    def __init__(self, max_events: int = 1000, *, on_apply: Callable[[Event], None] = _noop_event,
                 on_reset: Callable[[Reset], None] = _noop_reset,
                 on_stream: Callable[[Event], None] = _noop_event,
                 stream_to_app: bool = False) -> None:
        if max_events < 2:
            raise ValueError("max_events must be at least 2")
        self.max_events = max_events
        self.buffer_limit = max(max_events, 1024)
        self.on_apply = on_apply
        self.on_reset = on_reset
        self.on_stream_apply = on_stream
        self.stream_to_app = stream_to_app
        self.epoch: str | None = None
        self.last = 0
        self.started = False
        self.queue: deque[Event | Reset] = deque()
        self.app_next: int | None = None
        self.buffering = False
        self.need_resume = False
        self._buf: dict[int, Event] = {}
        self._stream_buf: list[Event] = []

    # -------------------------------------------------------- positions

    def start_live(self, epoch: str, offset: int) -> None:
        """First connection, no history wanted: start after the welcome's offset."""
        self.epoch, self.last, self.started = epoch, offset, True

    def start_at(self, after: int, epoch: str | None) -> None:
        """Start from a known position (``after=0``: the whole log); a resume follows."""
        self.epoch, self.last, self.started = epoch, after, True
        self.need_resume = True

    def resume_args(self) -> tuple[int, str | None]:
        """``after`` and ``epoch`` for the next ``resume`` frame."""
        after = self.last if self.app_next is None else self.app_next - 1
        return after, self.epoch

    def in_sync_with(self, epoch: str, offset: int) -> bool:
        """True when a new connection's welcome shows nothing was missed."""
        return (self.started and self.epoch == epoch and self.last == offset
                and self.app_next is None)

    # -------------------------------------------------------- resumes

    def begin_resume(self) -> None:
        """A ``resume`` is being sent: buffer events until its ``resumed``."""
        self.buffering = True
        self.need_resume = False
        self._buf.clear()
        self._stream_buf.clear()

    def end_connection(self) -> None:
        """The connection is gone; the next one resumes from :meth:`resume_args`."""
        self.buffering = False
        self._buf.clear()
        self._stream_buf.clear()
        self.need_resume = False

    def on_resumed(self, recovered: bool, offset: int, epoch: str) -> Reset | None:
        """The answer to our ``resume``: apply the buffered events (section 6, step 3)."""
        events = [self._buf[o] for o in sorted(self._buf)]
        self._buf.clear()
        self.buffering = False
        reset: Reset | None = None
        if recovered:
            self.epoch = epoch
        else:
            reset = Reset(epoch, offset, self.epoch, requested=True)
            self._reset(reset)
            self.last = events[0]["offset"] - 1 if events else offset
        for ev in events:
            self._process(ev)
        frames, self._stream_buf = self._stream_buf, []
        for frame in frames:
            self._deliver_stream(frame)
        if self.last < offset:
            self.need_resume = True  # events were dropped (buffer full) or out of order
        self._check_app()
        return reset

    def on_unrequested_reset(self, offset: int, epoch: str) -> Reset:
        """An unrequested ``resumed`` with ``recovered: false`` (section 6, step 5)."""
        reset = Reset(epoch, offset, self.epoch, requested=False)
        self._reset(reset)
        self.last = offset
        return reset

    def _reset(self, reset: Reset) -> None:
        self.epoch = reset.epoch
        self.app_next = None
        if self.queue and isinstance(self.queue[-1], Reset):
            self.queue[-1] = reset  # the earlier one's rebuild had not started: one is enough
        else:
            self.queue.append(reset)  # allowed past max_events: a Reset is never dropped
        self.on_reset(reset)

    # -------------------------------------------------------- events

    def on_event(self, ev: Event) -> None:
        o = ev.get("offset")
        if not isinstance(o, int) or isinstance(o, bool) or o < 1:
            return
        if self.buffering:
            if o not in self._buf and len(self._buf) < self.buffer_limit:
                self._buf[o] = ev
            return
        self._process(ev)

    def on_stream(self, frame: Event) -> None:
        """A ``chunk`` or ``partial`` frame (no offset): held while a resume is answered
        (at most ``buffer_limit``; beyond, dropped: the turn's end still brings its text)."""
        if self.buffering:
            if len(self._stream_buf) < self.buffer_limit:
                self._stream_buf.append(frame)
            return
        self._deliver_stream(frame)

    def on_caption(self, frame: Event) -> None:
        """An interim ``transcript`` (no offset: the caller's speech so far): queued for the
        application with ``stream_to_app`` when it is live (not while a resume is answered,
        nor when its queue is full or behind: the final ``transcript`` replaces it)."""
        if (self.stream_to_app and not self.buffering and self.app_next is None
                and len(self.queue) < self.max_events):
            self.queue.append(frame)

    def _deliver_stream(self, frame: Event) -> None:
        self.on_stream_apply(frame)
        if (self.stream_to_app and self.app_next is None
                and len(self.queue) < self.max_events):
            self.queue.append(frame)

    def _process(self, ev: Event) -> None:
        o: int = ev["offset"]
        if o == self.last + 1:
            self.last = o
            self.on_apply(ev)
            self._offer(ev, applied=True)
        elif o <= self.last:
            self._offer(ev, applied=False)
        else:
            self.need_resume = True  # a gap: the resume's replay brings it (and this one)

    def _offer(self, ev: Event, *, applied: bool) -> None:
        """Queue an event for the application, unless it is behind or full."""
        o: int = ev["offset"]
        if self.app_next is None:
            if not applied:
                return  # a duplicate it already has
            if len(self.queue) < self.max_events:
                self.queue.append(ev)
            else:
                self.app_next = o
        elif o == self.app_next and len(self.queue) < self.max_events:
            self.queue.append(ev)
            self.app_next = o + 1 if o < self.last else None

    def take(self) -> Event | Reset | None:
        item = self.queue.popleft() if self.queue else None
        self._check_app()
        return item

    def _check_app(self) -> None:
        if (self.app_next is not None and not self.buffering
                and len(self.queue) <= self.max_events // 2):
            self.need_resume = True
