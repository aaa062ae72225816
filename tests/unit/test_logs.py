"""Log lines carry the ids bound for their task, as JSON or as readable text."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from agentia import logs


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _capture(json_lines: bool) -> tuple[logging.Logger, io.StringIO]:
    logs.setup("info", json_lines=json_lines)
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    return logging.getLogger("agentia.test"), stream


def test_json_lines_carry_bound_ids_per_task() -> None:
    log, out = _capture(json_lines=True)

    async def turn(n: int) -> None:
        logs.bind(session=f"s{n}", turn=n)
        await asyncio.sleep(0)
        log.info("turn done")

    async def main() -> None:
        logs.bind(worker="w1")
        await asyncio.gather(turn(1), turn(2))
        log.info("all done")

    asyncio.run(main())
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert {(ln.get("session"), ln.get("turn")) for ln in lines[:2]} == {("s1", "1"),
                                                                        ("s2", "2")}
    assert all(ln["worker"] == "w1" for ln in lines)
    assert lines[2]["msg"] == "all done" and "session" not in lines[2]


def test_text_lines_append_ids() -> None:
    log, out = _capture(json_lines=False)

    async def main() -> None:
        logs.bind(conn="c9", session="abc")
        log.warning("slow reader")

    asyncio.run(main())
    assert out.getvalue().rstrip().endswith("slow reader [conn=c9 session=abc]")
