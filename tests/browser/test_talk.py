"""The page's Talk button, end to end: a real call in headless Chromium with a fake microphone.

Real processes and sockets: Redis, an edge, an agent worker (offline demo model), a LiveKit
server, the voice worker and the control plane serving the page with voice on. Chromium's fake
microphone plays espeak-ng saying "what time is it"; the page must show the call's states, the
transcript as a voice user message and the agent's reply in the timeline, receive the agent's
audio, and hang up. Screenshots go to test-output/browser/talk-*.png.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.browser.test_page import CHROMIUM, CHROMIUM_ARGS, SHOTS, wait_synced, watch
from tests.conftest import ROOT, Cluster
from tests.voice.conftest import VoiceWorker, voice_env
from voice.livekit_server import LiveKitServer, find_binary
from voice.speech import normalise

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(150),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium (apt-get install "
                              "chromium); browser downloads are not possible here"),
]

PHRASE = "what time is it"
KEY_WORDS = {"what", "time", "is", "it"}
"""Whisper writes it "What time is it?"; a clean CI run of this test once heard "What eye
visit?" (the box busy: Chromium's fake microphone plays the file on a timer). Transcription
accuracy is test_wer's and bench_wer's; here the page must show what was heard, whatever it
is, and the agent's answer to it."""
RATE = 48_000
ANSWERED_WITHIN_S = 0.3
"""Talk's POST /v1/voice/sessions, sent -> answered: the route answers once the agent is
dispatched (0.015-0.09 s measured); it waited until the agent was in the room before issue 16's
overlap (0.35-0.45 s), and for LiveKit's dispatch listing before that (~5.5 s)."""
LISTENING_WITHIN_S = 1.0
"""Talk click -> the agent listening, as the page records it (issue 16): the FIRST click of a
page on a freshly started LiveKit server and voice worker, and the median of ``NEXT_CALLS``
calls after it (one later call on this shared two-core box is noise). Before issue 16:
5.7-6.1 s; then 1.32-1.44 s with the POST waiting for the agent (0.36-0.49 s) before
room.connect (0.8-0.85 s). Now the POST answers at dispatch and the page connects while the
agent joins; what is left is livekit-client's room.connect (signalling, ICE, DTLS), with the
microphone published in it, or the agent's join: later calls 0.5-0.95 s at load average 7-24
here. The first call to a fresh LiveKit server took 0.9-1.9 s until the server's first-browser
cost was paid when it starts (voice/livekit_server.py ``warm_up``) and the page ran its
microphone checks once while idle (voice.js ``warmUp``): docs/voice.md, "In the browser"."""
NEXT_CALLS = 3
VENDOR = ROOT / "web" / "node_modules" / "livekit-client" / "dist" / "livekit-client.esm.mjs"


def speech_wav(path: Path, text: str) -> Path:
    """espeak-ng saying ``text`` as a 48 kHz mono 16-bit WAV, 2 s of silence before it and
    one after."""
    from livekit import rtc

    from voice.speech import ESPEAK_RATE, espeak_pcm

    pcm = np.frombuffer(asyncio.run(espeak_pcm(text, wpm=170)), dtype=np.int16)
    rs = rtc.AudioResampler(ESPEAK_RATE, RATE, num_channels=1,
                            quality=rtc.AudioResamplerQuality.HIGH)
    frame = rtc.AudioFrame(pcm.tobytes(), ESPEAK_RATE, 1, len(pcm))
    out = np.frombuffer(b"".join(bytes(f.data) for f in [*rs.push(frame), *rs.flush()]),
                        dtype=np.int16)
    voiced = np.flatnonzero(np.abs(out) > 100)
    # the page publishes the microphone as soon as it is in the room, maybe before the agent
    # listens: the phrase starts 2 s later
    lead, silence = np.zeros(2 * RATE, dtype=np.int16), np.zeros(RATE, dtype=np.int16)
    samples = np.concatenate([lead, out[voiced[0]:voiced[-1] + 1], silence])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.tobytes())
    return path


@pytest.fixture
def talk_browser(tmp_path: Path) -> Iterator[Browser]:
    wav = speech_wav(tmp_path / "caller.wav", PHRASE)
    # %noloop: the phrase is said once, from the moment the page opens the microphone
    fake_mic = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}%noloop"]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *fake_mic])
        yield b
        b.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"talk-{name}.png"), full_page=True)


@pytest.fixture
def livekit_any_load(tmp_path: Path) -> Iterator[LiveKitServer]:
    """A freshly started LiveKit server for each test, as ``agentia up`` starts it (so each
    test's first click is a first call to it; its config sets ``agents.target_load`` so that
    calls are dispatched even while Chromium keeps the two cores busy; see
    voice/livekit_server.py)."""
    binary = find_binary()
    if binary is None:
        pytest.skip("no LiveKit server binary: ~/go/bin/server or livekit-server on PATH "
                    "(go install github.com/livekit/livekit-server/cmd/server@v1.13.5)")
    server = LiveKitServer(binary, tmp_path / "livekit-talk").start()
    print(f"\nLiveKit warmed up in {server.warmed_s:.2f} s")
    assert server.warmed_s >= 0, "the fresh LiveKit server refused its warm-up request"
    yield server
    server.stop()


@pytest.fixture
def voice_system(cluster: Cluster, livekit_any_load: LiveKitServer) -> Iterator[str]:
    """Edge, agent worker, voice worker and the control plane with voice on: the page's URL."""
    started = time.monotonic()
    edge = cluster.edge()
    cluster.worker()
    # interims every 0.25 s of speech: "what time is it" lasts under a second
    env = {**voice_env(cluster, livekit_any_load), "AGENTIA_VOICE_INTERIM_S": "0.25"}
    voice = VoiceWorker(env)
    try:
        api = cluster.api(
            AGENTIA_VOICE="true", AGENTIA_DEV_TOKENS="true",
            AGENTIA_VOICE_MAX_CALLS_PER_USER=str(NEXT_CALLS + 2),  # calls just hung up linger
            AGENTIA_WS_URLS=f"ws://127.0.0.1:{edge.port}/v1/ws",
            **{k: v for k, v in env.items()
               if k.startswith(("AGENTIA_LIVEKIT_", "AGENTIA_VOICE_AGENT_NAME"))})
        print(f"\nsystem up in {time.monotonic() - started:.1f} s")
        yield f"http://127.0.0.1:{api.port}"
    finally:
        voice.stop()
    assert "Traceback" not in voice.text(), voice.log_path


def test_talk_button_calls_the_sessions_agent_in_the_browser(
        voice_system: str, talk_browser: Browser) -> None:
    assert VENDOR.is_file(), (
        "livekit-client is not installed: run `npm ci --no-audit --no-fund` in web/ (./dev does)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    problems: list[str] = []
    console: list[str] = []
    context = talk_browser.new_context(viewport={"width": 1280, "height": 820})
    page = context.new_page()
    watch(page, problems)
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    try:
        talk_through(page, voice_system)
        without_the_voice_client(talk_browser, voice_system)
    except Exception:
        shot(page, "failure")
        print("call log:", page.evaluate("window.agentiaApp?.callLog"))
        print("timeline:", page.locator(".turn").all_inner_texts())
        print("console:", *console[-40:], sep="\n  ")
        raise
    finally:
        context.close()
    # only the request made to fail in step 5 may complain in the console
    assert [p for p in problems if "503" not in p] == []
    print(f"talk test done in {time.monotonic() - started:.1f} s")


def talk_through(page: Page, base: str) -> None:
    page.goto(base + "/")
    wait_synced(page)
    talk = page.get_by_test_id("talk")
    expect(talk).to_be_enabled()
    expect(page.locator("#talk-wrap")).to_have_attribute("data-tooltip", "Talk to the agent")
    session = page.evaluate("window.agentiaApp.client.session")
    # as a user, who reads the page before clicking: the page has loaded voice.js and warmed
    # WebRTC up while it idled (app.js preloadVoice)
    page.wait_for_function("() => window.agentiaApp.voiceWarm !== null")
    page.evaluate("window.agentiaApp.voiceWarm")

    # 1. Talk: the call connects, the agent joins, the microphone opens.
    posts: list[float] = []
    page.on("requestfinished", lambda r: posts.append(r.timing["responseEnd"] / 1000)
            if r.url.endswith("/v1/voice/sessions") else None)
    page.evaluate("""() => { window.captionsSeen = [];
        new MutationObserver(() => { const c = document.querySelector('#pending .caption');
            if (c) window.captionsSeen.push([c.classList.contains('final'), c.textContent]);
        }).observe(document.getElementById('pending'),
                   { childList: true, subtree: true, characterData: true }); }""")
    talk.click()
    state = page.get_by_test_id("call")
    expect(page.get_by_test_id("hangup")).to_be_visible()
    expect(talk).to_be_hidden()
    expect(state).to_have_attribute("data-state", re.compile("^(listening|thinking|speaking)$"),
                                    timeout=25_000)
    assert page.evaluate("window.agentiaApp.call.session") == session
    ready_s = page.evaluate("""() => { const log = window.agentiaApp.callLog;
        return (log.find((c) => c.state === 'listening').at - log[0].at) / 1000; }""")
    marks = page.evaluate("window.agentiaApp.call.marks")
    print(f"\nTalk click -> agent listening: {ready_s:.2f} s (POST answered in {posts} s; "
          f"ms from start: {marks})")
    assert len(posts) == 1 and posts[0] <= ANSWERED_WITHIN_S, posts
    shot(page, "01-in-call")

    # 2. The transcript arrives as a voice user message, then the agent's reply.
    said = page.locator(".msg.user.voice .bubble")
    expect(said.first).to_have_text(re.compile(r"\w"), timeout=25_000)
    heard = normalise(said.first.inner_text())
    print(f"heard: {heard!r}")
    assert set(heard.split()) & KEY_WORDS, heard
    expect(page.locator(".msg.user.voice .via").first).to_have_text("Voice")
    # the caller's live caption (interim transcripts, when they came before the end of this
    # short phrase), replaced by the final, is gone once the message is shown
    print(f"captions seen: {page.evaluate('window.captionsSeen')}")
    expect(page.locator("#pending .caption")).to_have_count(0)
    reply = page.locator(".turn", has=said).locator(".msg.assistant").first
    expect(reply).to_have_attribute("data-status", "done", timeout=20_000)
    if "time" in heard.split():  # the demo model asks its clock
        expect(reply).to_contain_text("The tool says:")
        expect(reply.locator(".tool")).to_have_text("current_time")
    else:  # the demo model echoes what it was told
        expect(reply).to_contain_text("You said:")
        assert heard in normalise(reply.inner_text()), (heard, reply.inner_text())

    # 3. The agent speaks it: its state shows, and its audio reaches the page.
    page.wait_for_function(
        "() => window.agentiaApp.callLog.some((c) => c.state === 'speaking')", timeout=15_000)
    page.wait_for_function(
        "async () => (await window.agentiaApp.call.agentAudio()).energy > 0.001",
        timeout=15_000, polling=250)
    audio: dict[str, Any] = page.evaluate("window.agentiaApp.call.agentAudio()")
    assert audio["tracks"] == 1 and audio["samples"] > RATE // 2, audio
    expect(page.locator("#call-audio audio")).to_have_count(1)
    shot(page, "02-reply")
    page.set_viewport_size({"width": 390, "height": 760})
    page.wait_for_timeout(400)  # the sidebar slides away
    shot(page, "02-reply-narrow")
    page.set_viewport_size({"width": 1280, "height": 820})

    # 4. Hang up: the call ends, Talk comes back.
    expect(state).to_have_attribute("data-state", "listening", timeout=15_000)
    page.get_by_test_id("hangup").click()
    expect(state).to_have_attribute("data-state", "ended")
    expect(page.get_by_test_id("call-state")).to_have_text("Call ended")
    expect(talk).to_be_visible()
    expect(page.locator("#call-audio audio")).to_have_count(0)
    log = page.evaluate("window.agentiaApp.callLog")
    print("call states: " + ", ".join(
        f"{c['state']} +{(c['at'] - log[0]['at']) / 1000:.2f}s" for c in log))
    states = [c["state"] for c in log]
    assert states[:3] == ["connecting", "waiting", "listening"], states
    assert states[-1] == "ended", states
    shot(page, "03-ended")

    # 5. More calls: click -> listening over NEXT_CALLS calls, the median bounded.
    times = [call_once(page) for _ in range(NEXT_CALLS)]
    median = statistics.median(times)
    print(f"Talk click -> agent listening: first {ready_s:.2f} s, next {NEXT_CALLS} calls "
          + ", ".join(f"{t:.2f}" for t in times) + f" s, median {median:.2f} s")
    # the page's first click, to a LiveKit server and a voice worker that took no call yet
    # (bounded here, after the call was checked end to end)
    assert ready_s <= LISTENING_WITHIN_S, f"first click: {ready_s:.2f} s, marks {marks}"
    assert median <= LISTENING_WITHIN_S, times

    # 6. A refused call says why (the route answers 503 when LiveKit is unreachable).
    page.route("**/v1/voice/sessions", lambda route: route.fulfill(
        status=503, headers={"Retry-After": "5"}, content_type="application/json",
        body='{"detail":"voice is unavailable: retry shortly"}'))
    talk.click()
    shows_call_error(page, "Voice is unavailable", "04-error")


def call_once(page: Page) -> float:
    """Talk, until the agent listens, then hang up: click -> listening in seconds."""
    start = len(page.evaluate("window.agentiaApp.callLog"))
    page.get_by_test_id("talk").click()
    state = page.get_by_test_id("call")
    expect(state).to_have_attribute("data-state", re.compile("^(listening|thinking|speaking)$"),
                                    timeout=25_000)
    ready_s: float = page.evaluate(f"""() => {{
        const log = window.agentiaApp.callLog.slice({start});
        return (log.find((c) => c.state === 'listening').at - log[0].at) / 1000; }}""")
    print(f"  a call: {ready_s:.2f} s, ms from start: "
          f"{page.evaluate('window.agentiaApp.call.marks')}")
    page.get_by_test_id("hangup").click()
    expect(state).to_have_attribute("data-state", "ended")
    return ready_s


def shows_call_error(page: Page, message: str, name: str, timeout: float = 5_000) -> None:
    """The call ends in the ``error`` state saying ``message`` (a regex), Talk comes back;
    screenshot ``talk-<name>.png``."""
    expect(page.get_by_test_id("call")).to_have_attribute("data-state", "error",
                                                         timeout=timeout)
    expect(page.get_by_test_id("call-state")).to_have_text(re.compile(message))
    expect(page.get_by_test_id("talk")).to_be_visible()
    shot(page, name)


def without_the_voice_client(browser: Browser, base: str) -> None:
    """livekit-client not served (npm never ran): the chat works, Talk says what is wrong."""
    context = browser.new_context(viewport={"width": 1280, "height": 820})
    try:
        page = context.new_page()
        context.route("**/static/vendor/livekit-client/**", lambda route: route.fulfill(
            status=404, body="Not Found"))
        page.goto(base + "/")
        wait_synced(page)
        page.get_by_test_id("talk").click()
        shows_call_error(page, "Could not load the voice client", "05-no-voice-client")
    finally:
        context.close()


def test_a_call_no_voice_agent_takes_says_so(
        cluster: Cluster, livekit_any_load: LiveKitServer, talk_browser: Browser) -> None:
    """No voice worker runs for the agent name the control plane dispatches: the route answers
    at once, the page joins the room, and after AGENTIA_VOICE_DISPATCH_WAIT_S the room is
    deleted with its metadata saying ``no_voice_agent``; the page shows it as an error."""
    edge = cluster.edge()
    env = voice_env(cluster, livekit_any_load)  # its agent name: no worker registered for it
    api = cluster.api(
        AGENTIA_VOICE="true", AGENTIA_DEV_TOKENS="true", AGENTIA_VOICE_DISPATCH_WAIT_S="2",
        AGENTIA_WS_URLS=f"ws://127.0.0.1:{edge.port}/v1/ws",
        **{k: v for k, v in env.items()
           if k.startswith(("AGENTIA_LIVEKIT_", "AGENTIA_VOICE_AGENT_NAME"))})
    context = talk_browser.new_context(viewport={"width": 1280, "height": 820})
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{api.port}/")
        wait_synced(page)
        page.get_by_test_id("talk").click()
        state = page.get_by_test_id("call")
        expect(state).to_have_attribute("data-state", "waiting", timeout=10_000)
        shows_call_error(page, "No voice agent is available right now", "06-no-voice-agent",
                         timeout=15_000)
    finally:
        context.close()
