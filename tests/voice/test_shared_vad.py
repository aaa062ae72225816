"""One Silero stream per call (voice/shared_vad.py): the recogniser's VAD, fed the turn VAD's
inferences, cuts the utterances a Silero stream of its own cuts, from one inference per window.

Room-free, the real Silero model: espeak-ng speech with a 0.36 s pause (the recogniser's 0.2 s
silence cuts it there, the turn's 0.35 s does not), pushed in 20 ms frames at 48 kHz as a call's
audio comes.
"""

from __future__ import annotations

import asyncio
from typing import cast

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import vad
from livekit.plugins import silero

from tests.voice.vad_events import feed
from voice.caller import speech_48k
from voice.engines import vad_like
from voice.shared_vad import WINDOW_S, Decider, FollowerVAD, Tap, TurnVAD

RATE = 48_000
FRAME = RATE // 50  # 20 ms


@pytest.fixture(scope="module")
def shared() -> silero.VAD:
    return cast(silero.VAD, silero.VAD.load(min_silence_duration=0.35))


def frames(pcm: np.ndarray) -> list[rtc.AudioFrame]:
    return [rtc.AudioFrame(pcm[i:i + FRAME].tobytes(), RATE, 1, FRAME)
            for i in range(0, len(pcm) - FRAME + 1, FRAME)]


async def call_audio() -> np.ndarray:
    """Two sentences 0.36 s apart between quiet noise (not digital silence: not muted)."""
    noise = np.random.default_rng(7).integers(-20, 20, size=RATE * 3, dtype=np.int16)
    one = await speech_48k("what time is it")
    two = await speech_48k("and the weather in paris")
    return np.concatenate([noise[:RATE // 2], one, noise[:int(RATE * 0.36)], two,
                           noise[:RATE]])


async def events(stream: vad.VADStream) -> list[vad.VADEvent]:
    return [ev async for ev in stream if ev.type != vad.VADEventType.INFERENCE_DONE]


def cuts(evs: list[vad.VADEvent]) -> list[tuple[str, float, float]]:
    """(type, when in s, audio it carries in s) of each start and end of speech."""
    return [(ev.type.value, ev.samples_index / 16_000, ev.frames[0].duration) for ev in evs]


async def test_the_follower_cuts_as_a_stream_of_its_own(shared: silero.VAD) -> None:
    audio = frames(await call_audio())
    own = vad_like(shared, min_silence_duration=0.2).stream()  # the recogniser's, until now
    tap = Tap()
    turn = TurnVAD(shared, tap).stream()
    follower = FollowerVAD(tap, shared, min_silence_duration=0.2).stream()
    reads = [asyncio.create_task(events(s)) for s in (own, turn, follower)]
    for f in audio:
        for s in (own, turn, follower):
            s.push_frame(f)
    own.end_input()
    turn.end_input()
    await reads[1]  # the turn's stream has published every window before the follower ends
    follower.end_input()
    mine, turns, followed = (cuts(r) for r in await asyncio.gather(*reads))
    print(f"\nown stream {mine}\nturn {turns}\nfollower {followed}")
    assert [c[0] for c in turns] == ["start_of_speech", "end_of_speech"]  # 0.35 s: one cut
    assert [c[0] for c in mine] == ["start_of_speech", "end_of_speech"] * 2  # 0.2 s: two
    assert [c[0] for c in followed] == [c[0] for c in mine]
    for (_, when, audio_s), (_, own_when, own_audio_s) in zip(followed, mine, strict=True):
        # two resamplers fed the same frames differ in their samples: within two windows
        assert abs(when - own_when) <= 2 * WINDOW_S + 1e-9
        assert abs(audio_s - own_audio_s) <= 2 * WINDOW_S + 1e-9
    await asyncio.gather(own.aclose(), turn.aclose(), follower.aclose())
    assert tap.followers == []


async def test_muted_audio_is_silence_to_the_follower_only(shared: silero.VAD) -> None:
    """livekit-agents pushes silence to the STT (echo-canceller warm-up) and the real audio
    to the VAD: the turn hears speech, the recogniser nothing."""
    audio = frames(await call_audio())
    tap = Tap()
    turn = TurnVAD(shared, tap).stream()
    follower = FollowerVAD(tap, shared, min_silence_duration=0.2).stream()
    reads = [asyncio.create_task(events(s)) for s in (turn, follower)]
    muted = rtc.AudioFrame(bytes(2 * FRAME), RATE, 1, FRAME)
    for f in audio:
        turn.push_frame(f)
        follower.push_frame(muted)
    turn.end_input()
    turn_evs = await reads[0]
    follower.end_input()
    assert len(turn_evs) == 2
    assert await reads[1] == []
    await asyncio.gather(turn.aclose(), follower.aclose())


def window(p: float, n: int = 1536) -> rtc.AudioFrame:
    return rtc.AudioFrame(np.full(n, int(p * 1000), dtype=np.int16).tobytes(), RATE, 1, n)


def test_silero_rule_window_by_window(shared: silero.VAD) -> None:
    """Loop-free: start after min_speech (0.05 s: the second loud window), end after
    min_silence (0.2 s: the seventh quiet one), the audio kept is the prefix and the speech."""
    opts = vad_like(shared, min_silence_duration=0.2)._opts
    decide = Decider(opts)
    probs = [0.1] * 3 + [0.9] * 10 + [0.1] * 8
    seen = [(i, ev) for i, p in enumerate(probs) for ev in decide.window(p, window(p))
            if ev.type != vad.VADEventType.INFERENCE_DONE]
    assert [(i, ev.type) for i, ev in seen] == [
        (4, vad.VADEventType.START_OF_SPEECH), (19, vad.VADEventType.END_OF_SPEECH)]
    start, end = seen[0][1], seen[1][1]
    assert start.frames[0].samples_per_channel == 5 * 1536  # 3 quiet + 2 loud windows
    assert end.frames[0].samples_per_channel == 20 * 1536  # all but the last quiet window
    assert end.silence_duration == pytest.approx(7 * WINDOW_S)
    assert end.speech_duration == pytest.approx(0.064 + 15 * WINDOW_S - 7 * WINDOW_S)
    assert decide.speaking is False
    assert len(decide.buffer) == 2 * int(opts.prefix_padding_duration * RATE)


async def test_inline_inference_decides_as_the_executor_did(shared: silero.VAD) -> None:
    """The turn VAD's inference in the stream's own task (``inline``, the default) gives the
    same probability for every window as through the loop's executor (livekit's way), so
    the same starts and ends of speech, in 32 ms frames (one window each) as in 20 ms ones."""
    pcm = await call_audio()
    rs = rtc.AudioResampler(RATE, 16_000, num_channels=1)
    pcm16 = np.frombuffer(b"".join(bytes(f.data) for f in [
        *rs.push(rtc.AudioFrame(pcm.tobytes(), RATE, 1, len(pcm))), *rs.flush()]),
        dtype=np.int16)

    async def run(inline: bool, frame: int) -> list[tuple[str, float]]:
        stream = TurnVAD(shared, Tap(), inline=inline).stream()
        cuts, raw = await feed(stream, pcm16, frame)
        cut = [(kind, sample / 16_000) for kind, sample in cuts]
        probs = [round(p, 5) for p in raw]
        return [*cut, ("windows", float(len(probs))), ("p", float(sum(probs)))]

    executor = await run(False, 320)
    assert [c[0] for c in executor[:2]] == ["start_of_speech", "end_of_speech"]
    assert await run(True, 320) == executor
    # the windows are the same samples however the frames cut them
    windows = await run(True, 512)
    assert windows[:2] == executor[:2]
    assert abs(windows[3][1] - executor[3][1]) < 1e-3 * executor[2][1]
