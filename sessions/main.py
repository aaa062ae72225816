"""Run one agent worker process."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import signal
from typing import Any

from agentia import collector, tracing
from agentia.logs import bind
from agentia.ports import busy_line, reason
from agentia.probes import ProbeServer
from agentia.settings import SettingsError, WorkerSettings, worker_redis_pool
from sessions import registry, runtime
from sessions.a2a_tools import remote_tool
from sessions.bus import Bus, connect
from sessions.mcp import McpPool, configs_of, tools_of
from sessions.probes import worker_readiness
from sessions.registry import AgentSpec, RegistryError
from sessions.runtime import ModelConfig, load_agent, model_provider
from sessions.worker import Agents, Worker, WorkerConfig

log = logging.getLogger("agentia.worker")


def model_config(s: WorkerSettings, api_key: str | None) -> ModelConfig:
    return ModelConfig(api_key=api_key, base_url=s.model_base_url or None, model=s.model,
                       demo_word_delay=s.demo_word_delay, tracing=s.tracing,
                       read_every_ms=s.model_read_ms, client=s.model_client)


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
        if spec.a2a:  # remote A2A agents as tools (sessions/a2a_tools.py)
            agent = agent.clone(tools=[*agent.tools, *(remote_tool(p) for p in spec.a2a)])
        agents[spec.name] = (agent, spec.private_tools)
        published.append(registry.describe(spec, agent, order[spec.name]))
    return agents, published, run[:1] == specs[:1]


Loaded = tuple[Agents, list[dict[str, Any]], bool, McpPool]


def prepare(s: WorkerSettings) -> Loaded:
    """Everything the configuration says, checked before anything starts (RegistryError):
    the agents (each given its MCP servers), what is published of them, whether the default
    agent is among them, and the MCP servers' pool (not connected yet)."""
    specs, run = agent_specs(s)
    agents, published, default = load_agents(specs, run)
    try:
        configs = configs_of(run)
        pool = McpPool([c for cs in configs.values() for c in cs], ping_s=s.mcp_ping_s)
    except ValueError as exc:
        raise RegistryError(str(exc)) from None
    agents = {name: (pool.attach(agent, configs[name]) if configs[name] else agent, private)
              for name, (agent, private) in agents.items()}
    return agents, published, default, pool


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


async def dapr_memory(s: WorkerSettings, bus: Bus) -> tuple[Any, Any]:
    """(the Dapr client, the memory factory) for ``AGENTIA_MEMORY=dapr``; (None, None) for
    Redis memory. Waits for the sidecar (sessions/memory_dapr.py)."""
    if s.memory != "dapr":
        return None, None
    try:
        from sessions.memory_dapr import DaprMemory, connect_dapr
    except ImportError as exc:
        raise SettingsError("AGENTIA_MEMORY=dapr needs the dapr package: "
                            f"pip install 'agentia[dapr]' ({exc})") from None
    try:
        client = await connect_dapr(s.dapr_grpc_port)
    except TimeoutError:
        raise SettingsError("AGENTIA_MEMORY=dapr: no Dapr sidecar answered on DAPR_HTTP_PORT "
                            "(DAPR_HEALTH_TIMEOUT s)") from None
    return client, lambda sid, turn, owner: DaprMemory(
        client, s.dapr_statestore, bus.redis, bus.keys, sid, turn, owner)


async def serve_worker(s: WorkerSettings, api_key: str | None, burst: bool = False,
                       loaded: Loaded | None = None) -> None:
    agents, published, default, pool = loaded or prepare(s)
    bus = Bus(connect(s.redis_url, worker_redis_pool(s.concurrency)), prefix=s.redis_prefix,
              shards=s.shards)
    cfg = model_config(s, api_key)
    runtime.DIRECT[0] = s.direct_run
    dapr, memories = await dapr_memory(s, bus)
    worker = Worker(bus, agents, model_provider(cfg), WorkerConfig(
        concurrency=s.concurrency, lease_ms=s.lease_ms, max_attempts=s.max_attempts,
        coalesce_ms=s.coalesce_ms, turn_timeout_s=s.turn_timeout_s, grace_s=s.grace_s,
        approval_timeout_s=s.approval_timeout_s),
        published=published, unnamed=default, memories=memories)
    try:
        probes = await start_probes(s, pool, bus, worker.stopping)
    except SettingsError:
        await bus.close()
        raise
    _on_signals(worker)
    try:
        await pool.start()  # before turns: a turn finds every server connected (or down)
        for entry in published:  # with the MCP tools known now (renewals carry them too)
            agent, private = agents[entry["name"]]
            entry["tools"] = [*entry["tools"], *await tools_of(agent, private)]
        await _serve(s, cfg, bus, worker, probes, burst)
    finally:
        if probes is not None:
            await probes.close()
        await pool.close()
        await bus.close()
        if dapr is not None:
            await dapr.close()


def _on_signals(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, worker.stopping.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, dump_tasks)


async def _serve(s: WorkerSettings, cfg: ModelConfig, bus: Bus, worker: Worker,
                 probes: ProbeServer | None, burst: bool) -> None:
    label = ("demo model (offline)" if cfg.demo
             else f"model {cfg.model} at {cfg.base_url or 'OpenAI'}")
    # registered before READY: a client may ask for these agents as soon as we say so
    await bus.ensure_groups(worker.streams)
    await bus.publish_agents(worker.published)
    bind(worker=worker.name)
    agents = ",".join(worker.agents)
    log.info("worker %s running agents %s with %s", worker.name, agents, label)
    port = f" internal_port={probes.port}" if probes is not None else ""
    print(f"AGENTIA_WORKER_READY name={worker.name} agents={agents}{port}", flush=True)
    pauses = asyncio.create_task(collector.PAUSES.forever())  # agentia_gc_pause_seconds
    try:
        await worker.run(burst=burst)
    finally:
        pauses.cancel()


def run(s: WorkerSettings, api_key: str | None, burst: bool = False) -> None:
    loaded = prepare(s)  # a configuration error is told before anything
    tracing.setup("agentia-worker")  # OTEL_* (docs/operations.md#tracing); off by default
    with contextlib.suppress(ImportError):
        import uvloop
        uvloop.install()
    # what start-up made (the SDK, the clients, the agents) out of every collection: a third
    # of a short turn's CPU was the collector walking it (agentia/collector.py)
    collector.tune(s.worker_gc_gen0_threshold, s.worker_gc_gen1_threshold, who="worker")
    asyncio.run(serve_worker(s, api_key, burst, loaded))
