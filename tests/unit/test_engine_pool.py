"""voice.engines.EnginePool batches the utterances that wait for an engine."""

from __future__ import annotations

import ast
import logging
import threading
import time

import pytest

from voice.engines import EnginePool


class BatchDecoder:
    """An engine that decodes several utterances at once; blocks until released."""

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.batches: list[list[bytes]] = []
        self.fail = fail

    def decode(self, pcm16k: bytes) -> str:
        return self.decode_many([pcm16k])[0]

    def decode_many(self, pcms: list[bytes]) -> list[str]:
        self.batches.append(list(pcms))
        assert self.release.wait(5)
        if self.fail:
            raise RuntimeError("decoder broke")
        return [f"heard {p.decode()}" for p in pcms]


def _start(pool: EnginePool, pcm: bytes, out: dict[bytes, object]) -> threading.Thread:
    def run() -> None:
        try:
            out[pcm] = pool.decode(pcm)
        except Exception as exc:  # the test reads it
            out[pcm] = exc
    t = threading.Thread(target=run)
    t.start()
    return t


def _until(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.005)
    assert cond(), "timed out"  # type: ignore[operator]


def test_a_lone_utterance_is_decoded_at_once_alone() -> None:
    engine = BatchDecoder()
    engine.release.set()
    pool = EnginePool([engine], "fake")
    assert pool.decode(b"a") == "heard a"
    assert engine.batches == [[b"a"]] and pool.batches == {1: 1}
    assert pool.idle()


def test_utterances_that_wait_are_decoded_in_one_batch_each_to_its_caller() -> None:
    engine = BatchDecoder()
    pool = EnginePool([engine], "fake", max_batch=4)
    out: dict[bytes, object] = {}
    threads = [_start(pool, b"1", out)]
    _until(lambda: len(engine.batches) == 1)  # the first holds the only engine
    threads += [_start(pool, p, out) for p in (b"2", b"3", b"4", b"5", b"6")]
    _until(lambda: pool._waiting == 5)
    assert not pool.idle() and pool.try_decode(b"x") is None  # no interim while finals wait
    engine.release.set()
    for t in threads:
        t.join(5)
    assert out == {p: f"heard {p.decode()}" for p in (b"1", b"2", b"3", b"4", b"5", b"6")}
    sizes = [len(b) for b in engine.batches]
    assert sizes == [1, 4, 1], sizes  # the five that waited: a full batch, then the rest
    assert sorted(p for b in engine.batches for p in b) == [b"1", b"2", b"3", b"4", b"5", b"6"]
    assert pool.batches == {1: 2, 4: 1}
    assert pool.idle() and pool._waiting == 0


def test_a_failed_batch_fails_each_of_its_callers_and_frees_the_engine() -> None:
    engine = BatchDecoder(fail=True)
    pool = EnginePool([engine], "fake")
    out: dict[bytes, object] = {}
    threads = [_start(pool, b"1", out)]
    _until(lambda: len(engine.batches) == 1)
    threads += [_start(pool, p, out) for p in (b"2", b"3")]
    _until(lambda: pool._waiting == 2)
    engine.release.set()
    for t in threads:
        t.join(5)
    assert all(isinstance(out[p], RuntimeError) for p in (b"1", b"2", b"3")), out
    assert [len(b) for b in engine.batches] == [1, 2]
    engine.fail = False
    assert pool.decode(b"7") == "heard 7"  # the engine is back in the pool


class OneAtATime:
    """An engine without ``decode_many`` (pocketsphinx): never given a batch."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.seen: list[bytes] = []

    def decode(self, pcm16k: bytes) -> str:
        self.seen.append(pcm16k)
        assert self.release.wait(5)
        return pcm16k.decode()


@pytest.mark.parametrize("engines", [1, 2])
def test_an_engine_without_batches_decodes_one_at_a_time(engines: int) -> None:
    decoders = [OneAtATime() for _ in range(engines)]
    pool = EnginePool(list(decoders), "fake")
    out: dict[bytes, object] = {}
    threads = [_start(pool, p, out) for p in (b"1", b"2", b"3")]
    _until(lambda: sum(len(d.seen) for d in decoders) == engines)
    for d in decoders:
        d.release.set()
    for t in threads:
        t.join(5)
    assert out == {b"1": "1", b"2": "2", b"3": "3"}
    assert pool.batches == {1: 3}


def test_interims_leave_the_last_free_engine_to_finals() -> None:
    engines = [BatchDecoder(), BatchDecoder()]
    pool = EnginePool(list(engines), "fake")
    out: dict[bytes, object] = {}
    final = _start(pool, b"f", out)  # a final holds one engine ...
    _until(lambda: sum(len(e.batches) for e in engines) == 1)
    assert len(pool._free) == 1
    assert pool.try_decode(b"i") is None  # ... and the other stays for the next final
    assert sum(len(e.batches) for e in engines) == 1  # the interim did not start
    for e in engines:
        e.release.set()
    final.join(5)
    assert out == {b"f": "heard f"}
    assert pool.try_decode(b"i") == "heard i"  # both free: an interim runs
    alone = BatchDecoder()
    alone.release.set()
    assert EnginePool([alone], "fake").try_decode(b"i") == "heard i"  # one engine: as before


def test_each_decoding_logs_its_utterances_wait_and_its_time(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentia.voice")
    engine = BatchDecoder()
    pool = EnginePool([engine], "fake", max_batch=4)
    out: dict[bytes, object] = {}
    first = _start(pool, b"1", out)
    _until(lambda: len(engine.batches) == 1)
    waiting = [_start(pool, p, out) for p in (b"2", b"3")]
    _until(lambda: pool._waiting == 2)
    time.sleep(0.05)  # the two wait at least this long for the engine
    engine.release.set()
    for t in [first, *waiting]:
        t.join(5)
    assert pool.try_decode(b"i") == "heard i"
    got = [ast.literal_eval(r.getMessage().split(": ", 1)[1]) for r in caplog.records
           if r.getMessage().startswith("decode timings (ms)")]
    assert [g.get("batch") for g in got] == [1, 2, None]
    assert got[0]["wait"] == [0] and got[0]["decode"] >= 50  # held until released
    assert len(got[1]["wait"]) == 2 and min(got[1]["wait"]) >= 50
    assert got[2]["interim"] == 1 and got[2]["decode"] >= 0


def test_each_final_logs_how_many_other_decodings_ran_or_waited_when_it_came(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentia.voice")
    engines = [BatchDecoder(), BatchDecoder()]
    pool = EnginePool(list(engines), "fake")
    for e in engines:
        e.release.set()
    assert pool.decode(b"a") == "heard a"  # nothing else: alone
    for e in engines:
        e.release.clear()
    out: dict[bytes, object] = {}
    first = _start(pool, b"1", out)
    _until(lambda: sum(len(e.batches) for e in engines) == 2)  # "a" and "1"
    second = _start(pool, b"2", out)  # one running
    _until(lambda: sum(len(e.batches) for e in engines) == 3)
    third = _start(pool, b"3", out)  # two running: it waits
    _until(lambda: pool._waiting == 1)
    for e in engines:
        e.release.set()
    for t in (first, second, third):
        t.join(5)
    got = [ast.literal_eval(r.getMessage().split(": ", 1)[1]) for r in caplog.records
           if r.getMessage().startswith("decode timings (ms)")]
    assert sorted(g["others"] for g in got) == [0, 0, 1, 2], got
