"""The JavaScript SDK (clients/js, ``@agentia/client``): its ``node --test`` suite, its types
(``tsc``), what ``npm pack`` would publish, its close/error code table against
agentia/codes.py and the Python client's policy, and the page's use of it as the control plane
serves it (the served bytes are the package's source; every relative import resolves)."""

from __future__ import annotations

import json
import posixpath
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agentia.codes import RETRYABLE, CloseCode, ErrorCode
from agentia.settings import ApiSettings
from agentia_client.policy import CLOSE_CODES, close_action
from control.api import CLIENT_JS, create_app

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "clients" / "js"
TSC = PKG / "node_modules" / "typescript" / "bin" / "tsc"
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js 20+ on PATH")
needs_npm = pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm on PATH")


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=PKG, capture_output=True, text=True, timeout=timeout)


def node_eval(script: str) -> Any:
    """The JSON a module script prints, run with the package's index imported as ``sdk``."""
    code = f'import * as sdk from "./src/index.js";\n{script}'
    out = run(["node", "--input-type=module", "-e", code], timeout=30)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@needs_node
def test_unit_tests_pass_under_node() -> None:
    out = run(["node", "--test", "test/"])
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(r"^# pass [1-9]", out.stdout, re.M), out.stdout[-2000:]


@needs_node
def test_types_check_with_tsc() -> None:
    if not TSC.exists():
        pytest.skip("typescript is not installed: run `npm ci` in clients/js (./dev does)")
    out = run(["node", str(TSC), "-p", "."])
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


@needs_npm
def test_pack_ships_the_modules_and_their_types() -> None:
    out = run(["npm", "pack", "--dry-run", "--json", "--loglevel=error"])
    assert out.returncode == 0, out.stderr[-2000:]
    files = {f["path"] for f in json.loads(out.stdout)[0]["files"]}
    sources = {f"src/{p.name}" for p in (PKG / "src").glob("*.js")}
    assert sources <= files
    assert {"index.d.ts", "package.json", "README.md", "LICENSE"} <= files
    assert not [f for f in files if f.startswith(("test/", "node_modules/"))]
    assert (PKG / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    meta = json.loads((PKG / "package.json").read_text())
    assert meta["name"] == "@agentia/client" and "private" not in meta
    assert meta["type"] == "module" and meta["license"] == "Apache-2.0"
    root = meta["exports"]["."]
    assert root["types"].removeprefix("./") in files and root["default"].removeprefix("./") in files


@needs_node
def test_close_codes_match_the_server_and_the_python_client() -> None:
    js = node_eval("""
        const codes = [];
        for (let c = 1000; c <= 1015; c++) codes.push(c);
        for (let c = 4000; c <= 4999; c++) codes.push(c);
        console.log(JSON.stringify({
          table: sdk.CLOSE_CODES,
          terminal: codes.filter((c) => sdk.isTerminalClose(c)),
          codes }));""")
    assert {c: name for c, (name, _) in js["table"].items()} == {
        str(c.value): c.name for c in CloseCode}
    assert js["table"] == {str(c): [name, action == "reconnect"]
                           for c, (name, action) in CLOSE_CODES.items()}
    assert js["terminal"] == [c for c in js["codes"] if close_action(c) == "stop"]


@needs_node
def test_error_codes_match_the_server() -> None:
    js = node_eval("console.log(JSON.stringify("
                   "{all: sdk.ERROR_CODES, retryable: [...sdk.RETRYABLE_CODES]}))")
    assert sorted(js["all"]) == sorted(e.value for e in ErrorCode)
    # session_lost: the edge closes with 4004 next and the send goes again after the reconnect
    assert set(js["retryable"]) == {e.value for e in RETRYABLE} | {ErrorCode.SESSION_LOST.value}


@pytest.fixture(scope="module")
def api() -> TestClient:
    return TestClient(create_app(ApiSettings(dev=True)))


def test_the_control_plane_serves_the_package_source(api: TestClient) -> None:
    assert CLIENT_JS == PKG / "src"
    names = sorted(p.name for p in CLIENT_JS.glob("*.js"))
    assert "index.js" in names
    for name in names:
        r = api.get(f"/static/agentia-client/{name}")
        assert r.status_code == 200 and "javascript" in r.headers["content-type"], name
        assert r.content == (CLIENT_JS / name).read_bytes(), name
    assert api.get("/static/agentia.js").status_code == 404  # the old one-file SDK is gone


IMPORT = re.compile(r"""^\s*(?:import|export)\b[^;]*?\bfrom\s+["'](\.[^"']+)["']""", re.M | re.S)


def test_every_relative_import_of_the_page_is_served(api: TestClient) -> None:
    seen: set[str] = set()
    todo = ["/static/app.js"]
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        r = api.get(url)
        assert r.status_code == 200, url
        base = url.rsplit("/", 1)[0]
        for spec in IMPORT.findall(r.text):
            todo.append(posixpath.normpath(posixpath.join(base, spec)))
    assert "/static/agentia-client/index.js" in seen
    assert "/static/agentia-client/cursor.js" in seen


@needs_node
def test_every_export_has_a_declaration() -> None:
    names = set(node_eval("console.log(JSON.stringify(Object.keys(sdk)))"))
    declared = set(re.findall(r"^export (?:const|function|class) (\w+)",
                              (PKG / "index.d.ts").read_text(), re.M))
    if re.search(r"^export default \w+;", (PKG / "index.d.ts").read_text(), re.M):
        declared.add("default")
    assert names == declared


@needs_npm
def test_the_packed_tarball_installs_and_type_checks_for_a_user(tmp_path: Path) -> None:
    if not TSC.exists():
        pytest.skip("typescript is not installed: run `npm ci` in clients/js (./dev does)")
    out = run(["npm", "pack", "--json", "--loglevel=error", "--pack-destination", str(tmp_path)])
    assert out.returncode == 0, out.stderr[-2000:]
    tarball = tmp_path / json.loads(out.stdout)[0]["filename"]
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "private": true, "type": "module"}')
    npm = subprocess.run(["npm", "install", "--offline", "--no-audit", "--no-fund",
                          "--loglevel=error", str(tarball)], cwd=app, capture_output=True,
                         text=True, timeout=120)
    assert npm.returncode == 0, npm.stderr[-2000:]
    (app / "main.ts").write_text(
        'import { AgentiaClient, isTerminalClose } from "@agentia/client";\n'
        'const c: AgentiaClient = new AgentiaClient({ urls: "ws://x/v1/ws", storage: null });\n'
        'const stop: boolean = isTerminalClose(4501);\n'
        'c.send("hi").then((ack) => ack.offset + Number(stop));\n'
        '// @ts-expect-error: send takes text\n'
        'c.send(42);\n')
    tsc = subprocess.run(["node", str(TSC), "--noEmit", "--strict", "--module", "nodenext",
                          "--moduleResolution", "nodenext", "--lib", "es2022,dom", "main.ts"],
                         cwd=app, capture_output=True, text=True, timeout=120)
    assert tsc.returncode == 0, tsc.stdout[-3000:]
    node = subprocess.run(["node", "--input-type=module", "-e",
                           'import { PROTOCOL } from "@agentia/client"; console.log(PROTOCOL)'],
                          cwd=app, capture_output=True, text=True, timeout=30)
    assert node.stdout.strip() == "agentia.v1", node.stderr[-2000:]
