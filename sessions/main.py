"""Run one agent worker process."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import signal

from agentia.logs import bind
from agentia.settings import WorkerSettings, worker_redis_pool
from sessions.bus import Bus, connect
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


async def serve_worker(s: WorkerSettings, api_key: str | None, burst: bool = False) -> None:
    bus = Bus(connect(s.redis_url, worker_redis_pool(s.concurrency)), prefix=s.redis_prefix,
              shards=s.shards)
    cfg = model_config(s, api_key)
    worker = Worker(bus, load_agent(s.agent), model_provider(cfg), WorkerConfig(
        concurrency=s.concurrency, lease_ms=s.lease_ms, max_attempts=s.max_attempts,
        coalesce_ms=s.coalesce_ms, turn_timeout_s=s.turn_timeout_s, grace_s=s.grace_s,
        approval_timeout_s=s.approval_timeout_s))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, worker.stopping.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    label = ("demo model (offline)" if cfg.demo
             else f"model {cfg.model} at {cfg.base_url or 'OpenAI'}")
    bind(worker=worker.name)
    log.info("worker %s running agent %s with %s", worker.name, s.agent, label)
    print(f"AGENTIA_WORKER_READY name={worker.name}", flush=True)
    try:
        await worker.run(burst=burst)
    finally:
        await bus.close()


def run(s: WorkerSettings, api_key: str | None, burst: bool = False) -> None:
    with contextlib.suppress(ImportError):
        import uvloop
        uvloop.install()
    asyncio.run(serve_worker(s, api_key, burst))
