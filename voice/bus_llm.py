"""The session's agent as livekit-agents' LLM: a call's turn goes to the bus, its reply back.

Each turn logs its moments (``turn moments: {...}``, wall-clock seconds, comparable across the
machine's processes): when it was asked (the turn submitted) and when its first text came back.
``loadtest/bench_voice.py`` lines them up with the caller's end of speech and first audio
(:mod:`loadtest.voice_path`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectionError, APIConnectOptions, llm
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from agentia.codes import BusUnavailable
from voice.bridge import VoiceBridge

log = logging.getLogger("agentia.voice")


MOMENTS = {"user": ("stopped_speaking_at", "speech_end"),
           "assistant": ("started_speaking_at", "first_frame")}
"""Of livekit-agents' turn metrics, the wall-clock moment logged: the caller's end of speech
as the VAD stamped it (a user turn), the first audio frame handed to the room (an agent's)."""


def log_timings(item: Any, session: str) -> None:
    """A turn's latency parts as livekit-agents measured them (ms), one log line a message,
    and its moments (wall clock, s)."""
    metrics = getattr(item, "metrics", None) or {}
    parts = {k: round(v * 1000) for k, v in metrics.items()
             if k.endswith(("_delay", "_ttft", "_ttfb", "_latency")) and isinstance(v, float)}
    if parts:
        log.info("%s turn timings (ms): %s", getattr(item, "role", "?"), parts)
    key, name = MOMENTS.get(getattr(item, "role", ""), ("", ""))
    if not isinstance(at := metrics.get(key), float):
        return
    moments = {"session": session, name: at}
    for k, later in (("transcription_delay", "transcript"), ("end_of_turn_delay", "turn_end")):
        if isinstance(d := metrics.get(k), float):
            moments[later] = at + d
    log.info("turn moments: %s", moments)


class BusLLM(llm.LLM[Any]):
    """The session's agent, reached through the bus, as livekit-agents' LLM.

    It sends only the newest user message: the conversation lives in the session (memory
    kept by the agent workers), not in the call's chat context.
    """

    def __init__(self, bridge: VoiceBridge) -> None:
        super().__init__()
        self.bridge = bridge

    @property
    def model(self) -> str:
        return "agentia-session"

    @property
    def provider(self) -> str:
        return "agentia"

    def chat(self, *, chat_ctx: llm.ChatContext, tools: list[llm.Tool] | None = None,
             conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
             parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
             tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
             extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN) -> llm.LLMStream:
        return _BusStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _BusStream(llm.LLMStream):
    def __init__(self, owner: BusLLM, **kw: Any) -> None:
        super().__init__(owner, **kw)
        self._bridge = owner.bridge
        self._retry_on_chunk_sent = False  # text already spoken must not be spoken twice

    async def _run(self) -> None:
        msg = next((m for m in reversed(self.chat_ctx.messages()) if m.role == "user"), None)
        text = (msg.text_content or "").strip() if msg is not None else ""
        if msg is None or not text:
            return
        client_id = f"voice-{msg.id}"[:64]  # stable across retries: the turn is stored once
        asked, first = time.time(), 0.0
        try:
            async for said in self._bridge.ask(text, client_id):
                if not first:
                    first = time.time()
                    log.info("turn moments: %s", {"session": self._bridge.session,
                                                  "asked": asked, "first_text": first})
                self._event_ch.send_nowait(llm.ChatChunk(
                    id=client_id, delta=llm.ChoiceDelta(role="assistant", content=said)))
        except BusUnavailable as exc:
            raise APIConnectionError("the message bus is unavailable") from exc
