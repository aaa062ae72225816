"""A SIP caller for the telephony test: Debian's ``sipp`` places the call and plays a recorded
question as RTP (G.711 µ-law in a pcap file), and :class:`RtpEar` listens on the port the
caller's SDP offers, where the SIP service sends the agent's audio."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from pathlib import Path
from typing import cast

import numpy as np

RATE = 8_000
FRAME = 160  # 20 ms of PCMU
PT_PCMU = 0


def mulaw(pcm: np.ndarray) -> bytes:
    """16-bit linear PCM as G.711 µ-law bytes."""
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exp = np.floor(np.log2(mag)).astype(np.int32) - 7
    mant = (mag >> (exp + 3)) & 0x0F
    return bytes((~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8).tobytes())


def linear(ulaw: bytes) -> np.ndarray:
    """G.711 µ-law bytes as 16-bit linear PCM (int32 array)."""
    u = ~np.frombuffer(ulaw, dtype=np.uint8).astype(np.int32) & 0xFF
    exp, mant = (u >> 4) & 0x07, u & 0x0F
    mag = (((mant << 3) + 0x84) << exp) - 0x84
    return np.where(u & 0x80, -mag, mag)


async def speech_8k(text: str, lead_s: float = 1.0, tail_s: float = 1.5) -> np.ndarray:
    """espeak-ng saying ``text`` at 8 kHz (the telephone's rate), silence around it."""
    from livekit import rtc

    from voice.speech import ESPEAK_RATE, espeak_pcm

    pcm = await espeak_pcm(text, wpm=160)
    rs = rtc.AudioResampler(ESPEAK_RATE, RATE, num_channels=1,
                            quality=rtc.AudioResamplerQuality.HIGH)
    frames = [*rs.push(rtc.AudioFrame(pcm, ESPEAK_RATE, 1, len(pcm) // 2)), *rs.flush()]
    voice = np.frombuffer(b"".join(bytes(f.data) for f in frames), dtype=np.int16)
    return np.concatenate([np.zeros(int(RATE * lead_s), np.int16), voice,
                           np.zeros(int(RATE * tail_s), np.int16)])


def rtp_pcap(path: Path, pcm: np.ndarray) -> Path:
    """``pcm`` (8 kHz) as a pcap of RTP/PCMU packets every 20 ms, what sipp's
    ``play_pcap_audio`` sends (it takes the UDP payloads and their timing; the addresses are
    its own)."""
    payload = mulaw(pcm)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # Ethernet frames
    for n, at in enumerate(range(0, len(payload) - FRAME + 1, FRAME)):
        rtp = struct.pack("!BBHII", 0x80, PT_PCMU, n & 0xFFFF, at, 0x5EED) \
            + payload[at:at + FRAME]
        udp = struct.pack("!HHHH", 6000, 6002, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0,
                         socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1")) + udp
        frame = b"\0" * 12 + b"\x08\x00" + ip
        t = n * FRAME / RATE
        out.append(struct.pack("<IIII", int(t), int(t % 1 * 1e6), len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path


SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="agentia phone caller">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:{caller}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=caller 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {ear} RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendrecv
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:{caller}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
  <pause milliseconds="{talk_ms}"/>
  <send retrans="500"><![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: <sip:{caller}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"""


def scenario(path: Path, caller: str, ear_port: int, pcap: Path, talk_ms: int) -> Path:
    """sipp's scenario: INVITE offering PCMU with ``ear_port`` as the caller's RTP port, ACK,
    play ``pcap``, stay on the line ``talk_ms``, BYE."""
    path.write_text(SCENARIO.format(caller=caller, ear=ear_port, pcap=pcap, talk_ms=talk_ms))
    return path


class RtpEar(asyncio.DatagramProtocol):
    """The caller's RTP port: keeps when each packet came and how loud it was (RMS of its
    PCMU samples); ``answered`` is set once ``need_s`` seconds of sound (RMS over
    ``threshold``) came."""

    def __init__(self, need_s: float = 0.5, threshold: float = 500.0) -> None:
        self.need_s, self.threshold = need_s, threshold
        self.heard: list[tuple[float, float]] = []
        self.loud = 0
        self.first_loud: float | None = None
        self.answered = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, need_s: float = 0.5) -> tuple[RtpEar, int]:
        loop = asyncio.get_running_loop()
        transport, ear = await loop.create_datagram_endpoint(lambda: cls(need_s),
                                                             local_addr=("127.0.0.1", 0))
        return ear, int(transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        if len(data) <= 12 or data[1] & 0x7F != PT_PCMU:
            return
        start = 12 + 4 * (data[0] & 0x0F)  # past the CSRCs
        samples = linear(data[start:]).astype(np.float64)
        rms = float(np.sqrt(np.mean(samples ** 2))) if len(samples) else 0.0
        self.heard.append((time.monotonic(), rms))
        if rms > self.threshold:
            self.loud += 1
            self.first_loud = self.first_loud or time.monotonic()
        if self.loud_s() >= self.need_s:
            self.answered.set()

    def listen_from_now(self) -> None:
        """Count only the sound that comes from now on (``answered`` cleared)."""
        self.loud = 0
        self.first_loud = None
        self.answered.clear()

    def loud_s(self) -> float:
        """Seconds of sound heard (20 ms a packet louder than ``threshold``)."""
        return self.loud * FRAME / RATE

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
