"""The entries of a node's delivery stream: how they are written (a tick's chunk records,
sessions/log_redis.py; a script's fan-out, sessions/scripts.py ``_FAN_OUT``) and read back into
:class:`sessions.roles.Delivered` (sessions/delivery_redis.py).

An entry is one of:

* ``{s, o, e}``: one log event of session ``s`` at offset ``o``;
* ``{s, o, m}``: several log events at offsets ``o``, ``o + 1``, … joined by newlines (a
  script's fan-out of ``turn_start`` + ``state thinking``, or of ``state idle`` + the ending;
  session 15: one entry per node instead of two);
* ``{t: record\\nrecord…}``: a tick's chunks for this node, a record
  ``<session>\\t<run>|<seq>\\t<text as a JSON string>``: the chunk frame is made here, byte for
  byte what the worker's ``orjson.dumps(events.chunk(...))`` gives (session 15: ~50 bytes of
  ~110 a record fewer through Redis's parser, stream, AOF and reply);
* ``{b: record\\nrecord…}``: the same with the whole frame, ``<session>\\t<run>|<seq>\\t<frame>``
  (until session 15, and for a frame that is not the plain chunk shape);
* ``{s, x, f}``: a notice about a whole session (``deleted``; ``frame``: an off-log frame in
  ``f``).

Ids hold no tab or newline and a JSON text no raw control character, so nothing is escaped.
Readers of this version read every kind: roll edges and voice out before workers (docs/deploy.md).
"""

from __future__ import annotations

from sessions.roles import ChunkAt, Delivered

_CHUNK = b'{"type":"chunk","turn":%s,"attempt":%s,"seq":%s,"text":%s}'


def chunk_record(sid: bytes, run: bytes, seq: int, frame: bytes) -> tuple[bytes, bool]:
    """A chunk's record for a tick's entry and whether it is lean (``t``: the frame's text
    only), which it is when the frame is exactly what the reader makes of it."""
    turn, _, rest = run.partition(b":")
    attempt = rest.partition(b":")[0]
    head = b'{"type":"chunk","turn":%s,"attempt":%s,"seq":%d,"text":' % (turn, attempt, seq)
    if (frame.startswith(head) and frame.endswith(b"}") and turn.isdigit()
            and attempt.isdigit()):
        return b"%s\t%s|%d\t%s" % (sid, run, seq, frame[len(head):-1]), True
    return b"%s\t%s|%d\t%s" % (sid, run, seq, frame), False


def delivered(rid: bytes, f: dict[bytes, bytes]) -> list[Delivered]:
    """The events of one delivery entry (see the module's docstring)."""
    lean = f.get(b"t")
    batch = lean if lean is not None else f.get(b"b")
    if batch is not None:
        return _chunks(rid, batch, lean is not None)
    notice = f.get(b"x")
    if notice is not None:  # a session-wide notice (sessions/backend_redis.py)
        return [Delivered(rid, f[b"s"].decode(), 0, f.get(b"f", b""), notice=notice.decode())]
    sid, first = f[b"s"].decode(), int(f[b"o"])
    several = f.get(b"m")
    if several is not None:
        return [Delivered(rid, sid, first + n, e) for n, e in enumerate(several.split(b"\n"))]
    return [Delivered(rid, sid, first, f[b"e"])]


def _chunks(rid: bytes, batch: bytes, lean: bool) -> list[Delivered]:
    out = []
    for record in batch.split(b"\n"):
        sid, at, frame = record.split(b"\t", 2)
        run, _, seq = at.partition(b"|")
        turn, attempt, _ = run.split(b":", 2)
        if lean:
            frame = _CHUNK % (turn, attempt, seq, frame)
        out.append(Delivered(rid, sid.decode(), 0, frame,
                             ChunkAt(int(turn), int(attempt), run, int(seq))))
    return out
