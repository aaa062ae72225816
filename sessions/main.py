"""Run one agent worker process."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import signal

from agentia.logs import bind
from agentia.ports import busy_line, reason
from agentia.probes import ProbeServer
from agentia.settings import SettingsError, WorkerSettings, worker_redis_pool
from sessions.bus import Bus, connect
from sessions.mcp import McpPool
from sessions.probes import worker_readiness
from sessions.runtime import ModelConfig, load_agent, model_provider
from sessions.worker import Worker, WorkerConfig

log = logging.getLogger("agentia.worker")


def model_config(s: WorkerSettings, api_key: str | None) -> ModelConfig:
    return ModelConfig(api_key=api_key, base_url=s.model_base_url or None, model=s.model,
                       demo_word_delay=s.demo_word_delay, tracing=s.tracing)


def dump_tasks() -> None:
    """SIGUSR1: log every task's stack (for a worker that seems stuck)."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=8, file=out)
    log.warning("%d tasks:\n%s", len(asyncio.all_tasks()), out.getvalue())


async def start_probes(s: WorkerSettings, pool: McpPool, bus: Bus,
                       stopping: asyncio.Event) -> ProbeServer | None:
    """The worker's internal port, when ``AGENTIA_WORKER_INTERNAL_PORT`` asks for one."""
    if s.worker_internal_port < 0:
        return None
    probes = ProbeServer(worker_readiness(pool, bus.redis, stopping), s.worker_internal_host,
                         s.worker_internal_port)
    try:
        return await probes.start()
    except OSError as exc:
        raise SettingsError(busy_line(
            "agentia worker", "worker /readyz and /metrics", s.worker_internal_host,
            s.worker_internal_port, reason(exc), "AGENTIA_WORKER_INTERNAL_PORT")) from None


async def serve_worker(s: WorkerSettings, api_key: str | None, burst: bool = False) -> None:
    bus = Bus(connect(s.redis_url, worker_redis_pool(s.concurrency)), prefix=s.redis_prefix,
              shards=s.shards)
    cfg = model_config(s, api_key)
    pool = McpPool([], ping_s=s.mcp_ping_s)
    worker = Worker(bus, load_agent(s.agent), model_provider(cfg), WorkerConfig(
        concurrency=s.concurrency, lease_ms=s.lease_ms, max_attempts=s.max_attempts,
        coalesce_ms=s.coalesce_ms, turn_timeout_s=s.turn_timeout_s, grace_s=s.grace_s))
    try:
        probes = await start_probes(s, pool, bus, worker.stopping)
    except SettingsError:
        await bus.close()
        raise
    _on_signals(worker)
    try:
        await pool.start()  # before turns: a turn finds every server connected (or down)
        await _serve(s, cfg, worker, probes, burst)
    finally:
        if probes is not None:
            await probes.close()
        await pool.close()
        await bus.close()


def _on_signals(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, worker.stopping.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, dump_tasks)


async def _serve(s: WorkerSettings, cfg: ModelConfig, worker: Worker,
                 probes: ProbeServer | None, burst: bool) -> None:
    label = ("demo model (offline)" if cfg.demo
             else f"model {cfg.model} at {cfg.base_url or 'OpenAI'}")
    bind(worker=worker.name)
    log.info("worker %s running agent %s with %s", worker.name, s.agent, label)
    port = f" internal_port={probes.port}" if probes is not None else ""
    print(f"AGENTIA_WORKER_READY name={worker.name}{port}", flush=True)
    await worker.run(burst=burst)


def run(s: WorkerSettings, api_key: str | None, burst: bool = False) -> None:
    with contextlib.suppress(ImportError):
        import uvloop
        uvloop.install()
    asyncio.run(serve_worker(s, api_key, burst))
