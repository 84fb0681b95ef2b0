"""The image (docker/Dockerfile) and the two-node setup (docker/compose.yaml), without Docker.

Docker cannot run here, so the tests run what the image would: its ENTRYPOINT and CMD (less
tini) with its environment and a node's environment from compose.yaml, on the image's own
gateway.toml whose /data is a temporary folder — against this run's PostgreSQL, or on the
embedded SQLite default. The HEALTHCHECK's command is run as written.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import smtplib
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import make_url

from gateway.config import TABLES, parse_config
from tests.s3_server import S3Server
from tests.support import message
from tests.test_serve import free_port

DOCKER = Path(__file__).resolve().parent.parent / "docker"
IMAGE_CONFIG = "/etc/gateway/gateway.toml"  # where the Dockerfile copies docker/gateway.toml
HTTP_DECLARED = any(t.name == "http" for t in TABLES)


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of docker/Dockerfile: continuations joined, comments out."""
    instructions, current = [], ""
    for line in (DOCKER / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        word, _, arguments = (current + line).partition(" ")
        instructions.append((word.upper(), arguments.strip()))
        current = ""
    return instructions


def last(instruction: str) -> str:
    return [a for i, a in dockerfile() if i == instruction][-1]


def image_environment() -> dict[str, str]:
    """The gateway's settings the Dockerfile's ENV gives (PATH and Python's left out)."""
    pairs = [p for i, a in dockerfile() if i == "ENV" for p in shlex.split(a)]
    return dict(p.split("=", 1) for p in pairs if p.startswith("GATEWAY_"))


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))


def nodes() -> dict[str, dict[str, Any]]:
    """The services that run `serve` (the image's CMD)."""
    services = compose()["services"]
    return {n: s for n, s in services.items() if "build" in s and "command" not in s}


def healthcheck() -> list[str]:
    options, _, command = last("HEALTHCHECK").partition("CMD ")
    assert "--interval" in options
    return list(json.loads(command))


def image_command(*cmd: str) -> list[str]:
    """ENTRYPOINT + CMD (or `cmd`), without tini: tini only forwards signals and reaps."""
    entrypoint = json.loads(last("ENTRYPOINT"))
    assert entrypoint[:2] == ["tini", "--"]
    command = entrypoint[2:] + list(cmd or json.loads(last("CMD")))
    assert command[0] == "gateway"
    return [str(Path(sys.executable).with_name("gateway")), *command[1:]]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """What the image's /data would be, with the image's gateway.toml pointing into it."""
    folder = tmp_path / "data"
    (folder / "storage").mkdir(parents=True)
    text = (DOCKER / "gateway.toml").read_text(encoding="utf-8")
    (tmp_path / "gateway.toml").write_text(text.replace("/data", str(folder)), encoding="utf-8")
    return folder


@pytest.fixture
def bucket_of_node(s3_server: S3Server, s3_bucket: str) -> dict[str, str]:
    """What stands for compose.yaml's `s3` service here: a real S3 server (rclone) and a
    bucket, with its keys, in place of the example's."""
    return {
        "GATEWAY_STORAGE_S3_ENDPOINT": s3_server.endpoint,
        "GATEWAY_STORAGE_S3_BUCKET": s3_bucket,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
    }


def node_environment(data: Path, **overrides: str) -> dict[str, str]:
    """node1's environment as the container has it, on this machine's free ports."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    node = {k: str(v) for k, v in nodes()["node1"]["environment"].items()}
    local = {
        "GATEWAY_CONFIG": str(data.parent / "gateway.toml"),
        "GATEWAY_SMTP_HOST": "127.0.0.1",
        "GATEWAY_SMTP_PORT": str(free_port()),
        "GATEWAY_HTTP_HOST": "127.0.0.1",
        "GATEWAY_HTTP_PORT": str(free_port()),
    }
    return {**base, **image_environment(), **node, **local, **overrides}


@contextmanager
def running(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def said_until(proc: subprocess.Popen[str], words: str) -> str:
    """The process's stderr up to and with the first line that says `words` (start-up
    takes seconds on a loaded machine: a test waits for the line, not for a fixed time)."""
    assert proc.stderr is not None
    line = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and words not in line:
        line = proc.stderr.readline()
        if not line:
            break
    assert words in line, line + proc.stderr.read()
    return line


def wait_listening(proc: subprocess.Popen[str]) -> None:
    said_until(proc, "listening on smtp://")


def acknowledged(port: int) -> bool:
    """Whether a message sent to the port is taken (250)."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail(
                "a@example.org", ["postmaster@welyb.fr"], message(to="postmaster@welyb.fr")
            )
            return True
    except (OSError, smtplib.SMTPException):
        return False


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


# -- the image ----------------------------------------------------------------------------------


def test_the_image_installs_the_wheel_and_runs_under_tini_as_a_user() -> None:
    steps = dockerfile()
    stages = [a for i, a in steps if i == "FROM"]
    assert len(stages) == 2 and stages[0].endswith(" AS wheel")
    runs = " ".join(a for i, a in steps if i == "RUN")
    assert "pip wheel" in runs and "pip install --no-cache-dir /dist/*.whl" in runs
    assert " -e " not in runs and "--editable" not in runs
    assert "tini" in runs  # the Debian package that ENTRYPOINT runs
    assert last("USER").split(":")[0] not in ("0", "root")
    assert ("COPY", f"docker/gateway.toml {IMAGE_CONFIG}") in steps
    assert image_environment()["GATEWAY_CONFIG"] == IMAGE_CONFIG
    assert "/readyz" in healthcheck()[-1]


def test_the_dockerfile_passes_hadolint() -> None:
    result = run([str(Path(sys.executable).with_name("hadolint")), str(DOCKER / "Dockerfile")], {})
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_serves_as_compose_configures_a_node(
    data: Path, empty_database_url: str, bucket_of_node: dict[str, str], s3_server: S3Server
) -> None:
    """On PostgreSQL as compose.yaml runs it (`migrate` first, then the nodes), and with no
    database named (SQLite in the image's /data), which migrates itself."""
    env = node_environment(data, **bucket_of_node)
    if empty_database_url.startswith("sqlite"):
        del env["GATEWAY_DATABASE_URL"]
    else:
        env["GATEWAY_DATABASE_URL"] = empty_database_url
        migrate = compose()["services"]["migrate"]
        migrated = run(image_command(*migrate["command"]), env)
        assert migrated.returncode == 0, migrated.stderr
        assert "schema migrated" in migrated.stdout
    with running(image_command(), env) as serve:
        wait_listening(serve)
        port = int(env["GATEWAY_SMTP_PORT"])
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            assert smtp.ehlo()[0] == 250
        assert acknowledged(port)
        # The node's name (GATEWAY_NODE_NAME) names its spool segments, in the bucket; its
        # own folder holds none.
        listed = s3_server.client().list_objects(
            bucket_of_node["GATEWAY_STORAGE_S3_BUCKET"], prefix="spool/", recursive=True
        )
        segments = [o.object_name.rsplit("/", 1)[-1] for o in listed]
        assert segments and all(s.startswith("node1-") for s in segments)
        assert not list((data / "storage").rglob("*.seg"))
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
    assert (data / "gateway.db").exists() == empty_database_url.startswith("sqlite")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_DATABASE_URL", ""),
        ("GATEWAY_DATABASE_URL", "postgres://gateway:secret@postgres:port/gateway"),
        ("GATEWAY_DATABASE_URL", "mysql://gateway:secret@postgres/gateway"),
        ("GATEWAY_DATABASE_URI", "postgresql://gateway:secret@postgres/gateway"),
    ],
)
def test_a_database_url_meant_but_wrong_stops_the_image_in_one_line(
    data: Path, name: str, value: str
) -> None:
    env = node_environment(data)
    del env["GATEWAY_DATABASE_URL"]
    result = run(image_command(), {**env, name: value})
    assert result.returncode == 1
    assert result.stderr.startswith(f"gateway: {name}")
    assert result.stderr.count("\n") == 1, result.stderr
    assert "secret" not in result.stderr
    assert not (data / "gateway.db").exists()


def test_an_unreachable_database_is_never_replaced_by_sqlite(data: Path) -> None:
    port = free_port()
    env = node_environment(
        data, GATEWAY_DATABASE_URL=f"postgresql+psycopg://gw@127.0.0.1:{port}/gw"
    )
    migrate = run(image_command("migrate"), env)
    assert migrate.returncode == 1
    assert migrate.stderr.startswith("gateway: database unavailable: ")
    assert f"port {port} failed" in migrate.stderr and migrate.stderr.count("\n") == 1
    with running(image_command(), env) as serve:
        # serve waits for the database (not ready meanwhile), saying so; it takes no mail.
        said = said_until(serve, "database_unavailable")
        assert f"port {port} failed" in said
        assert serve.poll() is None
        assert not acknowledged(int(env["GATEWAY_SMTP_PORT"]))
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=30)
    assert not (data / "gateway.db").exists()


def test_the_healthcheck_fails_in_one_line_when_nothing_answers() -> None:
    env = {**os.environ, "GATEWAY_HTTP_PORT": str(free_port())}
    result = run([sys.executable, *healthcheck()[1:]], env)
    assert result.returncode == 1
    assert result.stderr.startswith("not ready: ") and result.stderr.count("\n") == 1


@pytest.mark.skipif(not HTTP_DECLARED, reason="no [http] listener (/readyz) on this branch yet")
def test_the_healthcheck_passes_on_a_live_serve(data: Path, bucket_of_node: dict[str, str]) -> None:
    env = node_environment(data, **bucket_of_node)
    del env["GATEWAY_DATABASE_URL"]  # the embedded default: ready without a migration step
    with running(image_command(), env) as serve:
        wait_listening(serve)
        deadline = time.monotonic() + 30
        while (check := run([sys.executable, *healthcheck()[1:]], env)).returncode != 0:
            assert time.monotonic() < deadline, check.stderr
            time.sleep(0.5)


# -- compose.yaml -------------------------------------------------------------------------------


def test_compose_runs_two_nodes_on_one_postgresql_configured_by_environment(
    tmp_path: Path,
) -> None:
    services = compose()["services"]
    assert set(nodes()) == {"node1", "node2"}
    image_file = tomllib.loads((DOCKER / "gateway.toml").read_text(encoding="utf-8"))
    configs = {}
    for name, node in nodes().items():
        assert node["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        env = {k: str(v) for k, v in node["environment"].items()}
        assert "GATEWAY_CONFIG" not in env  # the image's file, the rest by variables
        assert not any(".toml" in v for v in node.get("volumes", []))
        # The variables pass the gateway's own checks, on the image's file.
        configs[name] = parse_config(image_file, base=tmp_path, environ=image_environment() | env)
        # The image's HEALTHCHECK (/readyz) is kept, and the schema is migrated first.
        assert not node.get("healthcheck", {}).get("disable", False)
        assert node["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "bucket": {"condition": "service_completed_successfully"},
        }
        # Stateless: nothing mounted; the bytes in the bucket, the secrets in the database.
        assert "volumes" not in node
        assert configs[name].storage_backend == "s3" and configs[name].secrets_in_database
        assert configs[name].secrets_key_env == "GATEWAY_SECRETS_KEY"
        assert len(env["GATEWAY_SECRETS_KEY"]) >= 32
    one, two = configs.values()
    assert one.node_name != two.node_name
    assert one.database_url == two.database_url
    assert one.storage_s3 == two.storage_s3 and one.storage_s3 is not None
    assert len({str(n["environment"]["GATEWAY_SECRETS_KEY"]) for n in nodes().values()}) == 1
    # The store is the s3 service, with its root keys; the bucket service makes the bucket.
    s3, bucket = services["s3"], services["bucket"]
    assert one.storage_s3.endpoint == "http://s3:9000"  # the service's name, MinIO's port
    assert "objects:/data" in s3["volumes"] and s3["command"] == ["server", "/data"]
    keys = {k: str(v) for k, v in nodes()["node1"]["environment"].items()}
    assert (keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"]) == (
        s3["environment"]["MINIO_ROOT_USER"],
        s3["environment"]["MINIO_ROOT_PASSWORD"],
    )
    assert f"mb --ignore-existing s3/{one.storage_s3.bucket}" in bucket["command"][0]
    assert bucket["depends_on"] == {"s3": {"condition": "service_healthy"}}
    # The URL is the postgres service's, with its user, password and database.
    url, pg = make_url(one.database_url), services["postgres"]
    assert url.host == "postgres" and url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.database) == (
        pg["environment"]["POSTGRES_USER"],
        pg["environment"]["POSTGRES_PASSWORD"],
        pg["environment"]["POSTGRES_DB"],
    )
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["environment"]["GATEWAY_DATABASE_URL"] == one.database_url
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "healthcheck" in pg
