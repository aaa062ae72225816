"""Run one agent worker process."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import signal
from typing import Any

from agentia.logs import bind
from agentia.settings import WorkerSettings, worker_redis_pool
from sessions import registry
from sessions.bus import Bus, connect
from sessions.registry import AgentSpec, RegistryError
from sessions.runtime import ModelConfig, load_agent, model_provider
from sessions.worker import Agents, Worker, WorkerConfig

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


def agent_specs(s: WorkerSettings) -> tuple[list[AgentSpec], list[AgentSpec]]:
    """(every registered agent in order, the ones this worker runs); RegistryError if the
    configuration is wrong."""
    specs = registry.from_config(s.agent.split(","), s.agents)
    return specs, registry.select(specs, s.only_agents.split(","))


def load_agents(specs: list[AgentSpec], run: list[AgentSpec]
                ) -> tuple[Agents, list[dict[str, Any]], bool]:
    """Import the agents this worker runs: (name -> (agent, private tools), what it
    publishes of them, with their place among all registered agents, whether it runs the
    deployment's default agent)."""
    order = {spec.name: i for i, spec in enumerate(specs)}
    agents: Agents = {}
    published = []
    for spec in run:
        try:
            agent = load_agent(spec.agent_ref)
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            raise RegistryError(f"agent {spec.name}: cannot load {spec.agent_ref}: "
                                f"{exc}") from None
        agents[spec.name] = (agent, spec.private_tools)
        published.append(registry.describe(spec, agent, order[spec.name]))
    return agents, published, run[:1] == specs[:1]


async def serve_worker(s: WorkerSettings, api_key: str | None, burst: bool = False,
                       loaded: tuple[Agents, list[dict[str, Any]], bool] | None = None) -> None:
    agents, published, default = loaded or load_agents(*agent_specs(s))
    bus = Bus(connect(s.redis_url, worker_redis_pool(s.concurrency)), prefix=s.redis_prefix,
              shards=s.shards)
    cfg = model_config(s, api_key)
    worker = Worker(bus, agents, model_provider(cfg), WorkerConfig(
        concurrency=s.concurrency, lease_ms=s.lease_ms, max_attempts=s.max_attempts,
        coalesce_ms=s.coalesce_ms, turn_timeout_s=s.turn_timeout_s, grace_s=s.grace_s),
        published=published, unnamed=default)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, worker.stopping.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    label = ("demo model (offline)" if cfg.demo
             else f"model {cfg.model} at {cfg.base_url or 'OpenAI'}")
    # registered before READY: a client may ask for these agents as soon as we say so
    await bus.ensure_groups(worker.streams)
    await bus.publish_agents(published)
    bind(worker=worker.name)
    log.info("worker %s running agents %s with %s", worker.name, ", ".join(agents), label)
    print(f"AGENTIA_WORKER_READY name={worker.name} agents={','.join(agents)}", flush=True)
    try:
        await worker.run(burst=burst)
    finally:
        await bus.close()


def run(s: WorkerSettings, api_key: str | None, burst: bool = False) -> None:
    loaded = load_agents(*agent_specs(s))  # a configuration error is told before anything
    with contextlib.suppress(ImportError):
        import uvloop
        uvloop.install()
    asyncio.run(serve_worker(s, api_key, burst, loaded))
