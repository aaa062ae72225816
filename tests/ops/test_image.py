"""The image's files, checked without Docker (none runs here): the Dockerfile's structure,
the entrypoint's open-file limit (run for real with /bin/sh), and the workers' metrics sidecar
(run for real on a multi-process directory that a real process wrote)."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "ops" / "Dockerfile"
ENTRYPOINT = ROOT / "ops" / "entrypoint.sh"
EXPORTER = ROOT / "ops" / "helm" / "agentia" / "files" / "metrics_exporter.py"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last:]


def test_multi_stage_and_slim() -> None:
    froms = [arg for word, arg in instructions() if word == "FROM"]
    assert len(froms) >= 3, froms
    assert all(" AS " in f for f in froms[:-1]), "every build stage is named"
    assert "slim" in froms[-1] and " AS " not in froms[-1]
    runtime = [arg for word, arg in final_stage()]
    assert not any("build-essential" in a for a in runtime), "compilers stay in the build stage"
    assert any(a.startswith("--from=build ") for w, a in final_stage() if w == "COPY")


def test_python_version_satisfies_the_project() -> None:
    version = next(a.split("=", 1)[1] for w, a in instructions()
                   if w == "ARG" and a.startswith("PYTHON_VERSION="))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = re.fullmatch(r">=\s*(\d+)\.(\d+)", requires)
    assert minimum, requires
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.groups()))


def test_runs_as_a_non_root_user() -> None:
    users = [a for w, a in final_stage() if w == "USER"]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric, so runAsNonRoot can verify it"
    chart = (ROOT / "ops" / "helm" / "agentia" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in chart


def test_entrypoint_is_tini_then_the_ulimit_script() -> None:
    entry = [a for w, a in final_stage() if w == "ENTRYPOINT"][-1]
    assert entry == '["/usr/bin/tini", "--", "/usr/local/bin/agentia-entrypoint"]'
    assert ("COPY", "ops/entrypoint.sh /usr/local/bin/agentia-entrypoint") in final_stage()
    assert os.access(ENTRYPOINT, os.X_OK)


def test_extras_and_copied_paths_exist() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for w, a in instructions():
        if w == "ARG" and a.startswith("EXTRAS="):
            assert a.split("=", 1)[1] in extras
        if w == "COPY" and not a.startswith("--from="):
            for src in a.split()[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"


def test_the_sdk_is_installed_from_the_repository_with_the_project() -> None:
    """agentia depends on agentia-client (clients/python): the build stage copies it and
    installs it in the same pip call as the project, so pip never asks PyPI for it."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("agentia-client") for d in deps)
    build = instructions()[:max(i for i, (w, _) in enumerate(instructions()) if w == "FROM")]
    assert ("COPY", "clients/python ./clients/python") in build
    installs = [a for w, a in build if w == "RUN" and "pip install" in a and '".[' in a]
    assert len(installs) == 1 and "pip install ./clients/python -e" in installs[0], installs


def test_no_secret_in_the_image() -> None:
    secretish = re.compile(r"(SECRET|PASSWORD|TOKEN|API_KEY|PRIVATE)", re.I)
    for w, a in instructions():
        if w in ("ENV", "ARG", "LABEL"):
            assert not secretish.search(a), f"{w} {a}"
        if w in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|\.pem\b|\.key\b|id_rsa", a), f"{w} {a}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", ".env", "*.pem", "*.key", "tests"):
        assert entry in ignored, f".dockerignore lacks {entry}"


def test_edge_needs_are_documented() -> None:
    text = DOCKERFILE.read_text()
    for need in ("nofile", "net.core.somaxconn", "ip_local_port_range", "--processes",
                 "AGENTIA_NOFILE"):
        assert need in text, need


def test_image_sets_no_secret_and_no_dev_mode() -> None:
    """The image binds 0.0.0.0: it must rely on the secret check, never switch it off."""
    env = " ".join(a for w, a in final_stage() if w in ("ENV", "ARG"))
    assert "AGENTIA_HOST=0.0.0.0" in env
    assert "AGENTIA_DEV" not in env and "AGENTIA_JWT_SECRET" not in env
    assert "AGENTIA_INTERNAL_HOST" not in env  # internal port on loopback unless deployed


# --- the entrypoint, for real ---

def entry(env: dict[str, str], *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", str(ENTRYPOINT), *cmd], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=10, check=False)


def test_entrypoint_sets_the_soft_fd_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 2048 if hard == resource.RLIM_INFINITY else min(hard, 2048)
    res = entry({"AGENTIA_NOFILE": str(want)}, "sh", "-c", "ulimit -Sn")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(want)


def test_entrypoint_refuses_a_limit_above_the_hard_one() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard open-file limit here")
    res = entry({"AGENTIA_NOFILE": str(hard + 1)}, "true")
    assert res.returncode == 78
    assert "above the hard open-file limit" in res.stderr


def test_entrypoint_passes_the_command_through() -> None:
    res = entry({}, "sh", "-c", 'echo "$0 $1"', "a", "b")
    assert (res.returncode, res.stdout) == (0, "a b\n")


# --- the workers' metrics sidecar, for real ---

WRITER = """
from agentia import metrics as M
M.TURNS.labels("completed").inc(3)
M.FIRST_DELTA.observe(0.2)
"""


def test_metrics_exporter_serves_a_workers_multiprocess_directory(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", WRITER], env=env, cwd=ROOT, check=True, timeout=30)
    proc = subprocess.Popen([sys.executable, str(EXPORTER), "--host", "127.0.0.1", "--port", "0"],
                            env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert ready.startswith("AGENTIA_METRICS_READY port="), ready
        base = f"http://127.0.0.1:{ready.split()[1].split('=')[1]}"
        body = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert 'agentia_turns_total{outcome="completed"} 3.0' in body
        assert "agentia_time_to_first_delta_seconds_count 1.0" in body
        assert urllib.request.urlopen(f"{base}/healthz", timeout=5).read() == b"ok\n"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/other", timeout=5)
        assert err.value.code == 404
    finally:
        proc.kill()
        proc.wait(10)


def test_metrics_exporter_refuses_a_missing_directory(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "nope")}
    res = subprocess.run([sys.executable, str(EXPORTER), "--port", "0"], env=env,
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode != 0 and "is not a directory" in res.stderr


def test_the_image_ships_the_js_sdk_where_the_page_is_served_from() -> None:
    from control.api import CLIENT_JS, WEB

    copies = {tuple(a.split()) for w, a in final_stage() if w == "COPY"}
    # the control plane finds both beside its source tree, /app in the image
    assert ("web", "/app/" + str(WEB.relative_to(ROOT))) in copies
    assert ("clients/js/src", "/app/" + str(CLIENT_JS.relative_to(ROOT))) in copies
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "clients/js/node_modules" in ignored
