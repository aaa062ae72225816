"""The ``agentia`` command: up, gateway, worker, api, voice, webhooks, dapr-publish, token,
chat."""

from __future__ import annotations

import argparse
import os
import sys

from agentia.settings import (
    DEV_SECRET,
    ApiSettings,
    Common,
    SettingsError,
    WorkerSettings,
    from_env,
)
from agentia.settings_edge import EdgeSettings
from agentia.settings_outbox import WebhookSettings


def _logging(s: Common) -> None:
    from agentia.logs import setup

    setup(s.log_level, json_lines=s.log_json)


def cmd_gateway(a: argparse.Namespace) -> None:
    s = from_env(EdgeSettings, host=a.host, port=a.port, redis_url=a.redis)
    _logging(s)
    if a.processes > 1:
        from gateway.supervisor import run as supervise

        os.environ["AGENTIA_REDIS_URL"] = s.redis_url  # children read settings from env
        supervise(s, a.processes)
        return
    from gateway.main import run

    run(s)


def cmd_worker(a: argparse.Namespace) -> None:
    from sessions import registry

    s = from_env(WorkerSettings, agent=",".join(a.agent) if a.agent else None,
                 agents=a.agents, only_agents=",".join(a.only) if a.only else None,
                 redis_url=a.redis, concurrency=a.concurrency)
    # a wrong --agent/--agents/--only is refused before the Agents SDK is imported (~2 CPU-s);
    # sessions.main checks the same again and loads the agents
    registry.select(registry.from_config(s.agent.split(","), s.agents),
                    s.only_agents.split(","))
    from sessions.main import run

    _logging(s)
    run(s, os.environ.get("OPENAI_API_KEY"), burst=a.burst)


def cmd_api(a: argparse.Namespace) -> None:
    from control.api import run

    s = from_env(ApiSettings, host=a.host, api_port=a.port, redis_url=a.redis)
    _logging(s)
    run(s)


def cmd_webhooks(a: argparse.Namespace) -> None:
    from sessions.webhooks import run

    s = from_env(WebhookSettings, redis_url=a.redis)
    _logging(s)
    run(s)


def cmd_dapr_publish(a: argparse.Namespace) -> None:
    from agentia.settings_outbox import DaprPublishSettings
    from sessions.dapr_publish import run

    s = from_env(DaprPublishSettings, redis_url=a.redis)
    _logging(s)
    run(s)


def cmd_voice(a: argparse.Namespace) -> None:
    from voice.worker import main as voice

    voice(redis_url=a.redis)


def cmd_token(a: argparse.Namespace) -> None:
    from gateway.auth import SCOPES, mint

    scopes = a.scope.split()
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:  # edges ignore unknown scopes: a typo would mint a token that grants nothing
        raise SystemExit(f"agentia token: unknown scope {', '.join(unknown)} (known: "
                         f"{', '.join(sorted(SCOPES))})")
    secret = os.environ.get("AGENTIA_JWT_SECRET", DEV_SECRET)
    if secret == DEV_SECRET:  # only edges in dev mode accept it: say so, on stderr
        print("agentia: AGENTIA_JWT_SECRET is not set: signed with the public dev secret "
              "(accepted only by processes with AGENTIA_DEV=true)", file=sys.stderr)
    claims = {"scope": " ".join(scopes)} if scopes else {}
    print(mint(secret, a.user, a.ttl, **claims))


def cmd_up(a: argparse.Namespace) -> None:
    from launch.up import up

    up(port=a.port, workers=a.workers, edges=a.edges, api_port=a.api_port,
       livekit_port=a.livekit_port)


def cmd_chat(a: argparse.Namespace) -> None:
    from launch.chat import main as chat

    chat(a.url, a.user, a.session, a.message, a.agent)


def cmd_storm(a: argparse.Namespace) -> None:
    import importlib.util

    if importlib.util.find_spec("locust") is None:
        print("agentia storm needs Locust: pip install -e '.[load]'", file=sys.stderr)
        raise SystemExit(2)
    from loadtest.locust.run import main as run  # the allowed edge (pyproject: importlinter)

    args = list(a.args)
    scenarios = ("storm", "reconnect", "slow", "chat")
    run(args if args and args[0] in scenarios else ["storm", *args])


def cmd_capacity(a: argparse.Namespace) -> None:
    # the planner reads recorded benchmark results, so it lives with them in loadtest/ and is
    # imported only when asked for: the product's import graph stays free of the load tools
    try:
        from loadtest import capacity  # the allowed edge (pyproject: importlinter)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("loadtest"):
            raise
        print("agentia capacity needs the source tree (loadtest/): run it from a checkout",
              file=sys.stderr)
        raise SystemExit(2) from None
    p = argparse.ArgumentParser(prog="agentia capacity", description=CAPACITY_HELP)
    capacity.add_arguments(p)
    raise SystemExit(capacity.run(p.parse_args(a.args)))


CAPACITY_HELP = "machines and cost for N users, from recorded benchmarks"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentia", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gateway", help="run one edge process (WebSocket server)")
    g.add_argument("--host")
    g.add_argument("--port", type=int)
    g.add_argument("--redis", help="Redis URL (default AGENTIA_REDIS_URL)")
    g.add_argument("--processes", type=int, default=1,
                   help="edge processes sharing the port (SO_REUSEPORT), supervised")
    g.set_defaults(fn=cmd_gateway)
    w = sub.add_parser("worker", help="run an agent worker")
    w.add_argument("--agent", action="append", metavar="NAME=pkg.module:attr",
                   help="an agent to register (repeatable; a bare pkg.module:attr is named "
                   "'default'); none and no --agents: the demo agents (docs/agents.md)")
    w.add_argument("--agents", metavar="FILE", help="TOML file of [[agents]] "
                   "(default AGENTIA_AGENTS)")
    w.add_argument("--only", action="append", metavar="NAME",
                   help="run only this registered agent (repeatable; default: all)")
    w.add_argument("--redis")
    w.add_argument("--concurrency", type=int)
    w.add_argument("--burst", action="store_true", help="exit when no turn is left")
    w.set_defaults(fn=cmd_worker)
    a = sub.add_parser("api", help="run the control plane (health, metrics, history, page)")
    a.add_argument("--host")
    a.add_argument("--port", type=int, help="default AGENTIA_API_PORT or 8780")
    a.add_argument("--redis")
    a.set_defaults(fn=cmd_api)
    t = sub.add_parser("token", help="mint a dev token (HS256 with AGENTIA_JWT_SECRET; unset: "
                       "the public dev secret, accepted only in dev mode)")
    t.add_argument("--user", required=True)
    t.add_argument("--ttl", type=int, default=24 * 3600, help="seconds (default 86400)")
    t.add_argument("--scope", default="", help="a service token's scopes, space-separated: "
                   "sessions:read sessions:write sessions:operate users:delete "
                   "(docs/backend.md); none: a user token")
    t.set_defaults(fn=cmd_token)
    u = sub.add_parser("up", help="run everything on an embedded default")
    u.add_argument("--port", type=int, default=8765)
    u.add_argument("--workers", type=int, default=1)
    u.add_argument("--edges", type=int, default=1, help="edge processes (each its own port)")
    u.add_argument("--api-port", type=int, default=8780)
    u.add_argument("--livekit-port", type=int, default=0,
                   help="the private LiveKit server's port (default: any free one)")
    u.set_defaults(fn=cmd_up)
    c = sub.add_parser("chat", help="a small terminal chat client")
    c.add_argument("--url", help="default: the system 'agentia up' runs from this directory "
                   "(.agentia/up.json), else ws://127.0.0.1:8765/v1/ws")
    c.add_argument("--user", default="dev")
    c.add_argument("--agent", help="the agent a new session talks to (default: the "
                   "deployment's first; GET /v1/agents lists them)")
    c.add_argument("--session")
    c.add_argument("-m", "--message", action="append", help="send and exit after the reply")
    c.set_defaults(fn=cmd_chat)
    h = sub.add_parser("webhooks", help="run a webhook dispatcher (AGENTIA_WEBHOOK_URL, "
                       "docs/backend.md)")
    h.add_argument("--redis")
    h.set_defaults(fn=cmd_webhooks)
    dp = sub.add_parser("dapr-publish", help="publish session events to a Dapr topic through "
                        "the sidecar (AGENTIA_DAPR_TOPIC_EVENTS, docs/dapr.md)")
    dp.add_argument("--redis")
    dp.set_defaults(fn=cmd_dapr_publish)
    v = sub.add_parser("voice", help="run a voice worker (LiveKit Agents, explicit dispatch)")
    v.add_argument("--redis", help="Redis URL (default AGENTIA_REDIS_URL)")
    v.set_defaults(fn=cmd_voice)
    st = sub.add_parser("storm", add_help=False,
                        help="Locust load run on a private Redis and gateway: [storm|reconnect|"
                             "slow|chat] and loadtest.locust.run's options (--help for them)")
    st.add_argument("args", nargs=argparse.REMAINDER)
    st.set_defaults(fn=cmd_storm)
    k = sub.add_parser("capacity", add_help=False, help=CAPACITY_HELP + " (--help for options)")
    k.add_argument("args", nargs=argparse.REMAINDER)
    k.set_defaults(fn=cmd_capacity)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["storm"]:  # every option, --help too, belongs to the load runner
        cmd_storm(argparse.Namespace(args=argv[1:]))
        return
    if argv[:1] == ["capacity"]:  # and to the capacity planner (loadtest/capacity.py)
        cmd_capacity(argparse.Namespace(args=argv[1:]))
        return
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except SettingsError as exc:
        print(f"agentia: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
