"""The real OpenAI client path: OpenAIChatCompletionsModel against a local streaming stub, with
each model client (``AGENTIA_MODEL_CLIENT``: the OpenAI client's stream, or the lean one over
sessions/model_http.py)."""

from __future__ import annotations

import pytest

from tests.chat_completions_stub import ChatCompletionsStub
from tests.conftest import Client, Cluster


@pytest.mark.parametrize("model_client", ["openai", "lean"])
async def test_worker_streams_from_an_openai_compatible_endpoint(cluster: Cluster,
                                                                 model_client: str) -> None:
    stub = await ChatCompletionsStub().start()
    try:
        edge = cluster.edge()
        cluster.worker("sessions.demo:demo_agent", OPENAI_API_KEY="sk-test-not-real",
                       AGENTIA_MODEL_BASE_URL=stub.base_url, AGENTIA_MODEL="local-model",
                       AGENTIA_MODEL_CLIENT=model_client)
        c = await Client.open(edge.port, session="oa")
        await c.recv()
        await c.send(type="send", id="1", text="first question")
        reply = await c.until("reply", timeout=30)
        assert reply["text"] == "stub heard 1 user messages, last: first question"
        assert sum(f["type"] == "chunk" for f in c.frames) >= 1
        await c.send(type="send", id="2", text="second question")
        reply = await c.until("reply", timeout=30, turn=reply["offset"] + 1)
        # conversation memory reached the model: both user messages were sent
        assert reply["text"] == "stub heard 2 user messages, last: second question"
        req = stub.requests[-1]
        assert req["model"] == "local-model" and req["stream"] is True
        assert [m["role"] for m in req["messages"]][-3:] == ["user", "assistant", "user"]
    finally:
        await stub.stop()
