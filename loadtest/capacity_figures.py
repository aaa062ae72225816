"""Where the capacity model's figures come from: recorded benchmark results, inputs,
setting defaults and the price table. Each figure used is kept with its origin, so that the
output can say which result file (or flag) every number came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.record import load

COMMANDS = {
    "core-idle": "python -m loadtest.bench_core idle --connections 5000 --hold 65 --record",
    "core-turns-w1": "python -m loadtest.bench_core turns --rate 50 --rate 100 --rate 150 "
                     "--seconds 10 --workers 1 --record",
    "core-turns-w1-streamed": "python -m loadtest.bench_core turns --rate 10 --rate 20 "
                              "--seconds 15 --workers 1 --word-delay 0.05 --words 100 --record",
    "core-turns-w1-streamed-fast": "python -m loadtest.bench_core turns --rate 10 --rate 20 "
                                   "--seconds 15 --workers 1 --word-delay 0.01 --words 100 "
                                   "--record core-turns-w1-streamed-fast",
    "redis-shard": "python -m loadtest.bench_redis --record",
    "worker-cpu": "python -m loadtest.bench_worker --modes cpu --tree <main> --tree . "
                  "--rounds 2 --record",
    "worker-stream-inflight": "python -m loadtest.bench_worker --modes inflight --tree <main> "
                              "--tree . --streams 1000 --concurrency 1000 --seconds 100 "
                              "--grace 60 --reply-tokens 1000 --rounds 2 --record "
                              "--name worker-stream",
    "worker-stream-quiet-inflight": "python -m loadtest.bench_worker --modes inflight --tree "
                                    "<before> --tree <main> --streams 1000 --concurrency 1000 "
                                    "--seconds 60 --grace 40 --reply-tokens 1000 --rounds 1 "
                                    "--record --name worker-stream-quiet",
    "redis-shard-before": "python -m loadtest.bench_redis --tree before=<a checkout before "
                          "chunks> --tree after=. --record",
    "voice": "python -m loadtest.bench_voice --record",
}
"""The benchmark that writes each result the model needs."""

MEASURED: dict[str, tuple[str, list[tuple[str, str]]]] = {
    # label: (description, [(result name, dotted key)...] in order of preference)
    "edge_rss_kib": ("edge RSS per idle connection, KiB", [
        ("edge-idle", "edge_rss_kib_per_conn"), ("core-idle", "edge_rss_kib_per_conn")]),
    "slab_kib": ("kernel slab per connection, both ends of loopback, KiB", [
        ("edge-idle", "kernel_slab_kib_per_conn_both_ends"),
        ("core-idle", "kernel_slab_kib_per_conn_both_ends")]),
    "handshake_cpu": ("edge CPU-s per 1,000 handshakes", [
        ("edge-handshakes", "edge_cpu_s_per_1000"), ("core-idle", "edge_cpu_s_per_1000")]),
    "ping_cpu": ("edge CPU-s per 1,000 heartbeats", [
        ("edge-idle", "edge_cpu_s_per_1000_pings"), ("core-idle", "edge_cpu_s_per_1000_pings")]),
    "edge_turn_cpu": ("edge CPU-s per turn (demo model's deltas)", [
        ("core-turns-w1", "summary.edge_cpu_s_per_turn")]),
    "deltas": ("deltas per turn, turns benchmark", [
        ("core-turns-w1", "summary.deltas_per_turn")]),
    "worker_turn_cpu": ("worker CPU-s per turn (Agents SDK runner, demo model)", [
        ("core-turns-w1", "summary.workers_cpu_s_per_turn")]),
    "worker_turn_cpu_now": ("worker CPU-s per turn, demo model, newest worker (bench_worker)", [
        ("worker-cpu", "summary.demo_worker_cpu_s_per_turn")]),
    "worker_token_cpu_stream": ("worker CPU-s per streamed token, OpenAI-compatible model "
                                "(lean client, bench_worker inflight)", [
        ("worker-stream-quiet-inflight", "summary.worker_cpu_s_per_token"),
        ("worker-stream-inflight", "summary.worker_cpu_s_per_token")]),
    "words": ("reply words per turn, turns benchmark", [
        ("core-turns-w1", "summary.reply_words_per_turn")]),
    "deltas_streamed": ("deltas per turn, streamed turns benchmark", [
        ("core-turns-w1-streamed", "summary.deltas_per_turn")]),
    "edge_turn_cpu_streamed": ("edge CPU-s per turn, streamed turns benchmark", [
        ("core-turns-w1-streamed", "summary.edge_cpu_s_per_turn")]),
    "worker_turn_cpu_streamed": ("worker CPU-s per turn, streamed turns benchmark", [
        ("core-turns-w1-streamed", "summary.workers_cpu_s_per_turn")]),
    "words_streamed": ("reply words per turn, streamed turns benchmark", [
        ("core-turns-w1-streamed", "summary.reply_words_per_turn")]),
    "deltas_fast": ("deltas per turn, fast-streamed turns benchmark", [
        ("core-turns-w1-streamed-fast", "summary.deltas_per_turn")]),
    "edge_turn_cpu_fast": ("edge CPU-s per turn, fast-streamed turns benchmark", [
        ("core-turns-w1-streamed-fast", "summary.edge_cpu_s_per_turn")]),
    "worker_turn_cpu_fast": ("worker CPU-s per turn, fast-streamed turns benchmark", [
        ("core-turns-w1-streamed-fast", "summary.workers_cpu_s_per_turn")]),
    "words_fast": ("reply words per turn, fast-streamed turns benchmark", [
        ("core-turns-w1-streamed-fast", "summary.reply_words_per_turn")]),
    "redis_turn_cpu_full": ("redis-server CPU-s per turn, whole system (turns benchmark)", [
        ("core-turns-w1", "summary.redis_cpu_s_per_turn")]),
    "redis_turn_cpu_full_streamed": ("redis-server CPU-s per turn, whole system, streamed", [
        ("core-turns-w1-streamed", "summary.redis_cpu_s_per_turn")]),
    "redis_open_cpu": ("redis-server CPU-s per 1,000 sessions opened", [
        ("redis-shard", "idle.redis_cpu_s_per_1000_opens")]),
    "redis_session_b": ("Redis bytes per idle session", [
        ("redis-shard", "idle.redis_bytes_per_idle_session")]),
    "redis_turn_cpu": ("redis-server CPU-s per turn, base", [
        ("redis-shard", "fit.redis_cpu_s_per_turn_base")]),
    "redis_delta_cpu": ("redis-server CPU-s per delta", [
        ("redis-shard", "fit.redis_cpu_s_per_delta")]),
    "redis_char_cpu": ("redis-server CPU-s per reply character", [
        ("redis-shard", "fit.redis_cpu_s_per_reply_char")]),
    "redis_turn_cpu_before": ("redis-server CPU-s per turn, base, replay of log deltas", [
        ("redis-shard-before", "fit.redis_cpu_s_per_turn_base")]),
    "redis_delta_cpu_before": ("redis-server CPU-s per delta, replay of log deltas", [
        ("redis-shard-before", "fit.redis_cpu_s_per_delta")]),
    "redis_turn_cmds": ("Redis commands per turn, base", [
        ("redis-shard", "fit.commands_per_turn_base")]),
    "redis_delta_cmds": ("Redis commands per delta", [
        ("redis-shard", "fit.commands_per_delta")]),
    "log_b": ("session log bytes per turn, base", [("redis-shard", "fit.log_bytes_base")]),
    "log_b_delta": ("session log bytes per delta", [("redis-shard", "fit.log_bytes_per_delta")]),
    "log_b_char": ("session log bytes per reply character", [
        ("redis-shard", "fit.log_bytes_per_reply_char")]),
    "log_events": ("session log events per turn, base", [
        ("redis-shard", "fit.log_events_base")]),
    "log_events_delta": ("session log events per delta (0: pieces are chunks, off the log)", [
        ("redis-shard", "fit.log_events_per_delta")]),
    "delivery_b": ("delivery stream bytes per turn, base", [
        ("redis-shard", "fit.delivery_bytes_base")]),
    "delivery_b_delta": ("delivery stream bytes per delta", [
        ("redis-shard", "fit.delivery_bytes_per_delta")]),
    "delivery_b_char": ("delivery stream bytes per reply character", [
        ("redis-shard", "fit.delivery_bytes_per_reply_char")]),
    "mem_b": ("conversation memory bytes per turn, base", [
        ("redis-shard", "fit.memory_bytes_base")]),
    "mem_b_char": ("conversation memory bytes per reply character", [
        ("redis-shard", "fit.memory_bytes_per_reply_char")]),
}


class CapacityError(Exception):
    """The model cannot answer: a figure is missing, or an input or price is unusable."""


class MissingResult(CapacityError):
    """A figure the model needs was never recorded (or has no price)."""


@dataclass(frozen=True, slots=True)
class Fig:
    label: str
    value: float
    kind: str
    """measured, input, setting or price"""
    where: str


class Figures:
    """Every figure the model used, with where it came from."""

    def __init__(self, results_dir: Path, prices: dict[str, Any], prices_path: Path) -> None:
        self.dir, self.prices, self.prices_path = results_dir, prices, prices_path
        self.used: dict[str, Fig] = {}
        self._docs: dict[str, dict[str, Any] | None] = {}

    def _doc(self, name: str) -> dict[str, Any] | None:
        if name not in self._docs:
            try:
                self._docs[name] = load(name, self.dir)
            except FileNotFoundError:
                self._docs[name] = None
        return self._docs[name]

    def measured(self, key: str) -> float:
        desc, candidates = MEASURED[key]
        for name, path in candidates:
            doc = self._doc(name)
            value = _dig(doc["figures"], path) if doc else None
            if isinstance(value, int | float):
                where = f"{self.dir / (name + '.json')} ({doc['date'] if doc else ''}, " \
                        f"commit {doc['commit'] if doc else ''})"
                return self._use(key, desc, float(value), "measured", where)
        looked = ", ".join(f"{n}.json:{p}" for n, p in candidates)
        cmd = COMMANDS.get(candidates[-1][0], "its benchmark")
        raise MissingResult(f"no recorded result for {desc} (looked for {looked} in "
                            f"{self.dir}); run: {cmd}")

    def reply_path(self, name: str) -> str | None:
        """How result ``name`` streamed reply pieces: "chunks" or "log deltas" (results that
        do not say predate chunks); None when ``name`` was never recorded."""
        doc = self._doc(name)
        if doc is None:
            return None
        path = doc["figures"].get("reply_path") or _dig(doc["figures"], "summary.reply_path")
        return str(path or "log deltas")

    def voice_calls(self, flag: float | None) -> float:
        """Calls per voice worker: a recorded voice result, else the flag, else an error.

        A result whose ``calls_per_voice_worker`` is null was measured and met the p95 bound
        at no level of concurrent calls: that is said, never read as a figure."""
        unmet: list[str] = []
        for path in sorted(self.dir.glob("voice-*.json")):
            doc = self._doc(path.stem)
            if doc is None or "calls_per_voice_worker" not in doc["figures"]:
                continue
            value = doc["figures"]["calls_per_voice_worker"]
            if isinstance(value, int | float) and value > 0:
                return self._use("voice_calls", "calls per voice worker", float(value),
                                 "measured", f"{path} ({doc['date']})")
            limit = doc["figures"].get("p95_limit_ms")
            unmet.append(f"{path} ({doc['date']}) met the p95 bound"
                         f"{f' of {limit:g} ms' if isinstance(limit, int | float) else ''} "
                         "at no level of concurrent calls (calls_per_voice_worker: null)")
        if flag is None:
            why = "; ".join(unmet) or (f"no recorded voice result (no {self.dir}/voice-*.json "
                                       "with calls_per_voice_worker)")
            raise MissingResult(f"{why}; pass --calls-per-voice-worker N (an input, not a "
                                f"measurement), run {COMMANDS['voice']}, or pass "
                                "--voice-share 0 for a model without voice")
        why = ("the recorded voice result met the p95 bound at no level" if unmet
               else "no voice result recorded")
        return self.inp("voice_calls", f"calls per voice worker (NOT measured: {why})", flag,
                        "--calls-per-voice-worker")

    def inp(self, key: str, desc: str, value: float, flag: str) -> float:
        return self._use(key, desc, value, "input", flag)

    def setting(self, key: str, desc: str, value: float, name: str) -> float:
        return self._use(key, desc, value, "setting", f"{name} (default)")

    def price(self, section: str, field: str) -> float:
        try:
            value = float(self.prices[section][field])
        except (KeyError, TypeError, ValueError):
            raise MissingResult(f"price table {self.prices_path} has no [{section}] "
                                f"{field} = <number>") from None
        return self._use(f"{section}.{field}", f"[{section}] {field}", value, "price",
                         str(self.prices_path))

    def _use(self, key: str, desc: str, value: float, kind: str, where: str) -> float:
        self.used[key] = Fig(desc, value, kind, where)
        return value


def _dig(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d
