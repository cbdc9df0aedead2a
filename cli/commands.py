"""The `vlmq` command line (typer): run the service, run one worker, submit jobs, manage models.

Failures a user can cause or meet (a bad option, a missing file, the API or Redis away, the API
refusing a request, a job that fails) print one line on stderr, `error: ...`, and exit with the
code of their kind below; only a bug prints a traceback (exit 1). README "Exit codes" has the table.

Commands other than `vlmq up` find the running stack through `vlmq.cli.runstate`: with
`VLMQ_REDIS_URL` / `VLMQ_API_URL` unset, they use the Redis and API of the `vlmq up` running from
the same data dir.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vlmq.cli import runstate
from vlmq.jobtypes import JOB_TYPES as JOB_TYPES_BY_NAME
from vlmq.settings import Settings, get_settings

# --- exit codes (README "Exit codes") -----------------------------------------------------------
EXIT_OK = 0
EXIT_BUG = 1  # an unexpected error: a bug, reported with its traceback
EXIT_USAGE = 2  # bad usage or input: options, --type, --params, the image file, VLMQ_* settings, unknown names
EXIT_API_UNREACHABLE = 3  # no answer from the API (refused, timeout), an answer that is not vlmq's, or a 5xx
EXIT_API_REFUSED = 4  # the API answered 4xx: this request is refused (status, code and message printed)
EXIT_JOB_FAILED = 5  # submit --wait: the job ended failed or cancelled
EXIT_REDIS_UNREACHABLE = 6  # the keys commands, `vlmq up`: Redis does not answer
EXIT_WAIT_TIMEOUT = 7  # submit --wait: --timeout passed before the job ended
EXIT_ALREADY_UP = 8  # vlmq up: another `vlmq up` is running from this data dir
EXIT_LOCAL_FILES = 9  # the data dir cannot be written (demo build, vlmq up)
EXIT_INTERRUPTED = 130  # Ctrl-C while waiting for a job (the job goes on)

JOB_TYPES = tuple(JOB_TYPES_BY_NAME)  # in their order (vlmq/jobtypes/)
MODEL_JOB_TYPES = tuple(name for name, spec in JOB_TYPES_BY_NAME.items() if not spec.fan_out)

app = typer.Typer(help="vlmq: asynchronous jobs for vision-language models.", no_args_is_help=True)
demo_app = typer.Typer(help="The offline demo models.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored hashed in Redis).", no_args_is_help=True)
cache_app = typer.Typer(help="The answer cache.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")
app.add_typer(keys_app, name="keys")
app.add_typer(cache_app, name="cache")
console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)  # soft_wrap: one line, whatever the width


# --- failures ----------------------------------------------------------------------------------


def _fail(code: int, message: str) -> NoReturn:
    """One line on stderr, then exit `code`."""
    err_console.print(Text("error: " + " ".join(message.split()), style="red"))
    raise typer.Exit(code)


def _redact(url: str) -> str:
    """A URL fit for a message: its password replaced by ***."""
    return re.sub(r"(//[^/@:;]*:)[^/@;]+@", r"\1***@", url)


@dataclass
class _Stack:
    """Where this process's Redis and API settings came from (for messages)."""

    data_dir: Path = Path(".vlmq")
    state: runstate.RunState | None = None
    filled: list[str] = field(default_factory=list)
    resolved: bool = False


_stack = _Stack()


def _settings(find_stack: bool = True) -> Settings:
    """The settings; with `find_stack`, the running `vlmq up`'s Redis and API where not set explicitly
    (put into the environment, so that everything this process starts sees the same)."""
    try:
        settings = get_settings()
        if find_stack and not _stack.resolved:
            _stack.resolved, _stack.data_dir = True, settings.data_dir
            _stack.state, _stack.filled = runstate.fill_environ(os.environ, settings.data_dir)
            if _stack.filled:
                get_settings.cache_clear()
                settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"VLMQ_{'__'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        )
        _fail(EXIT_USAGE, f"invalid setting: {problems}")
    return settings


def _origin(variables: tuple[str, ...]) -> str:
    """Why this URL: an explicit variable, the running `vlmq up`, or the default."""
    if _stack.state is not None and variables[0] in _stack.filled:
        return f"the running `vlmq up`, pid {_stack.state.pid}, {runstate.path_in(_stack.data_dir)}"
    present = {name.upper() for name in os.environ}
    named = [v for v in variables if v in present]
    if named:
        return "from " + ", ".join(named)
    return f"the default: {variables[0]} unset, no running `vlmq up` in {_stack.data_dir}"


@contextmanager
def _api_errors(settings: Settings) -> Iterator[None]:
    """API failures as one line and their exit code."""
    import httpx

    from vlmq.client import ApiError

    where = f"the API at {_redact(settings.api_url)} ({_origin(runstate.API_VARS)})"
    try:
        yield
    except ApiError as exc:
        detail = f"{exc.status} {exc.code}: {exc.message}" + (f" (field: {exc.field})" if exc.field else "")
        if exc.status >= 500:
            _fail(EXIT_API_UNREACHABLE, f"{where} failed: {detail}")
        if exc.status == 401 and not settings.api_key:
            detail += " (set VLMQ_API_KEY)"
        if exc.retry_after is not None:
            detail += f" (retry after {exc.retry_after:g}s)"
        _fail(EXIT_API_REFUSED, f"the API refused the request: {detail}")
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        _fail(EXIT_USAGE, f"{where}: not an http(s) URL: {exc}")
    except httpx.TimeoutException as exc:
        _fail(EXIT_API_UNREACHABLE, f"{where} did not answer in time ({type(exc).__name__})")
    except httpx.HTTPError as exc:
        _fail(EXIT_API_UNREACHABLE, f"cannot reach {where}: {exc or type(exc).__name__}")
    except (ValueError, KeyError, TypeError) as exc:  # a 2xx that is not vlmq's JSON
        _fail(EXIT_API_UNREACHABLE, f"{where} answered something that is not vlmq's API: {exc!r}")


def _client(settings: Settings):
    from vlmq.client import Client

    key = settings.api_key.get_secret_value() if settings.api_key else None
    return Client(settings.api_url, key)


@contextmanager
def _redis_errors(settings: Settings) -> Iterator[None]:
    """Redis failures (and a Redis URL that cannot be used) as one line and their exit code."""
    import redis

    where = f"Redis at {_redact(settings.redis_url)} ({_origin(runstate.REDIS_VARS)})"
    try:
        yield
    except redis.RedisError as exc:
        _fail(EXIT_REDIS_UNREACHABLE, f"cannot reach {where}: {exc or type(exc).__name__}")
    except ValueError as exc:  # from_url: no such scheme; sentinel:// without its master name
        _fail(EXIT_USAGE, f"cannot use {where}: {exc}")


def _redis(settings: Settings):
    from vlmq.redis_conn import sync_client

    with _redis_errors(settings):
        return sync_client(settings)


# --- running the service ---------------------------------------------------------------------


@app.command()
def up(
    models: Annotated[str | None, typer.Option(help="Comma-separated models to start workers for (default: all).")] = None,
    flower: Annotated[bool, typer.Option(help="Start Flower.")] = True,
    frontend: Annotated[bool, typer.Option(help="Start the Gradio frontend.")] = True,
    embedded_redis: Annotated[bool, typer.Option(help="Start the embedded Redis even if one is reachable.")] = False,
) -> None:
    """Run everything: Redis (found or embedded), the API, one worker per model (group workers for a model
    group), Flower, the frontend."""
    settings = _settings(find_stack=False)
    running = runstate.read(settings.data_dir)
    if running is not None:
        _fail(EXIT_ALREADY_UP, f"vlmq is already up from {settings.data_dir} (pid {running.pid}, API "
                               f"{running.api_url}); stop it first, or use another VLMQ_DATA_DIR")

    from vlmq.cli.launcher import Service, Supervisor, python_module
    from vlmq.cli.redis_server import choose_redis
    from vlmq.registry import RegistryError, load_registry
    from vlmq.tasks.demo import build_demo_models

    try:
        registry = load_registry(settings)
        if any(spec.is_demo for spec in registry):
            with console.status("building the offline demo models..."):
                build_demo_models(settings.demo_models_dir)
            registry = load_registry(settings)  # checkpoint folders now exist
    except RegistryError as exc:
        _fail(EXIT_USAGE, str(exc))
    except OSError as exc:
        _fail(EXIT_LOCAL_FILES, f"cannot build the demo models in {settings.demo_models_dir}: {exc}")
    if models:
        chosen, groups = [m.strip() for m in models.split(",") if m.strip()], []
    else:  # every model not in a group gets its own worker; every group its group workers
        groups = [g for g in registry.groups.values() if g.members and g.workers]
        grouped = {member for g in groups for member in g.members}
        chosen = [name for name in registry.names if name not in grouped]
    unknown = [name for name in chosen if name not in registry]
    if unknown:
        _fail(EXIT_USAGE, f"unknown model {', '.join(map(repr, unknown))}; known: {', '.join(registry.names)}")

    explicit = settings.redis_url if "redis_url" in settings.model_fields_set else None
    try:
        redis_url, embedded = choose_redis(explicit, settings.data_dir, force_embedded=embedded_redis)
    except RuntimeError as exc:
        _fail(EXIT_REDIS_UNREACHABLE, _redact(str(exc)))

    env = {**os.environ, "VLMQ_REDIS_URL": redis_url, "VLMQ_API_URL": settings.api_url}
    logs = settings.data_dir / "logs"
    services = [Service("api", python_module("vlmq.cli", "api"), restart=True, log_path=logs / "api.log")]
    services += [
        Service(f"worker:{name}", python_module("vlmq.cli", "worker", "--model", name), restart=True,
                log_path=logs / f"worker-{name}.log")
        for name in chosen
    ]
    services += [
        Service(f"group:{g.name}:{i}", python_module("vlmq.cli", "worker", "--group", g.name), restart=True,
                log_path=logs / f"group-{g.name}-{i}.log")
        for g in groups for i in range(g.workers)
    ]
    services.append(Service("webhooks", python_module("vlmq.cli", "webhooks"), restart=True,
                            log_path=logs / "webhooks.log"))
    if flower:
        services.append(Service("flower", python_module("vlmq.cli", "flower"), restart=True, log_path=logs / "flower.log"))
    if frontend:
        services.append(Service("frontend", python_module("vlmq.cli", "frontend"), restart=True,
                                log_path=logs / "frontend.log"))
    supervisor = Supervisor(services, env)
    try:
        try:
            supervisor.start_all()
            state_file = runstate.write(settings.data_dir, redis_url, settings.api_url, settings.redis_sentinel_master)
        except OSError as exc:
            _fail(EXIT_LOCAL_FILES, f"cannot write under {settings.data_dir}: {exc}")

        table = Table(title="vlmq is up", show_header=False)
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        table.add_row("API", f"{settings.api_url}  (docs: {settings.api_url}/docs)")
        if frontend:
            table.add_row("Frontend", f"http://127.0.0.1:{settings.frontend_port}")
        if flower:
            table.add_row("Flower", f"http://127.0.0.1:{settings.flower_port}")
        redis_row = _redact(redis_url)
        if embedded:
            redis_row += f"  (embedded, data in {settings.data_dir / 'redis'})"
        table.add_row("Redis", redis_row)
        table.add_row("Workers", ", ".join(chosen))
        for g in groups:
            table.add_row(f"Group {g.name}", f"{g.workers} group worker(s), up to {g.max_loaded} of its "
                                             f"{len(g.members)} models loaded each, on demand")
        table.add_row("Logs", str(logs))
        table.add_row("State", f"{state_file}  (how other vlmq commands find this stack)")
        console.print(table)
        if settings.auth_open:
            console.print("[yellow]Open mode: the API binds loopback and accepts requests without an API key "
                          "(VLMQ_AUTH_MODE=required to demand one).[/yellow]")
        console.print("Ctrl-C stops everything.")
        supervisor.watch()
    finally:
        supervisor.stop_all()  # nothing left to stop after watch(); what start_all began, after a failure
        runstate.remove(settings.data_dir)
        if embedded:
            embedded.stop()


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default: VLMQ_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: VLMQ_API_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="API processes on the one port "
                                                "(default: VLMQ_API_WORKERS).")] = None,
) -> None:
    """Run the API (uvicorn; several processes share the port and its load, a socket each)."""
    import uvicorn

    from vlmq.cli.api_processes import APP, ApiProcesses, balanced, port_free

    settings = _settings()
    processes = workers or settings.api_workers
    host, port = host or settings.api_host, port or settings.api_port
    with _prometheus_multiproc(processes):
        if processes > 1 and balanced():
            if not port_free(host, port):  # the processes' shared sockets would share it with that one too
                _fail(EXIT_USAGE, f"{host}:{port} is in use")
            status = ApiProcesses(host, port, processes).run()
            if status:
                raise typer.Exit(status)
            return
        uvicorn.run(APP, factory=True, host=host, port=port, workers=processes, log_level="warning",
                    access_log=False)


@contextmanager
def _prometheus_multiproc(processes: int) -> Iterator[None]:
    """Several API processes: HTTP metrics summed across them through prometheus_client's files, in
    a fresh folder (PROMETHEUS_MULTIPROC_DIR; the one set by the caller is used as it is)."""
    if processes <= 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="vlmq-prometheus-") as folder:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        try:
            yield
        finally:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]


@app.command()
def worker(
    model: Annotated[str | None, typer.Option(help="The registry model this worker serves.")] = None,
    group: Annotated[str | None, typer.Option(help="The model group this worker serves, loading members on "
                                                   "demand.")] = None,
) -> None:
    """Run one Celery worker pinned to MODEL (loads its weights once, consumes only its queues), or a
    group worker for GROUP (holds a few of its members at once, loads the one jobs wait for)."""
    from vlmq.registry import RegistryError, load_registry

    if (model is None) == (group is None):
        _fail(EXIT_USAGE, "give exactly one of --model or --group")
    settings = _settings()
    try:
        registry = load_registry(settings)
    except RegistryError as exc:
        _fail(EXIT_USAGE, str(exc))
    if group is not None:
        if group not in registry.groups:
            _fail(EXIT_USAGE, f"unknown model group {group!r}; known: {', '.join(registry.groups) or 'none'}")
        if not registry.groups[group].members:
            _fail(EXIT_USAGE, f"model group {group!r} has no members (no checkpoint folders found: "
                              f"`vlmq demo build` writes the demo's)")
        from vlmq.tasks.group_worker import run_group_worker

        raise typer.Exit(run_group_worker(group, settings))
    if model not in registry:
        _fail(EXIT_USAGE, f"unknown model {model!r}; known: {', '.join(registry.names)}")
    from vlmq.tasks.worker import run_worker

    raise typer.Exit(run_worker(model, settings))


@app.command()
def webhooks(concurrency: Annotated[int, typer.Option(help="Deliveries in flight at once.")] = 8) -> None:
    """Run the webhook delivery worker (its own queue: a slow receiver never holds a model worker)."""
    from vlmq.tasks.webhooks import run_webhook_worker

    raise typer.Exit(run_webhook_worker(_settings(), concurrency))


@app.command()
def flower() -> None:
    """Run Flower against vlmq's broker (basic auth from VLMQ_FLOWER_BASIC_AUTH)."""
    from vlmq.tasks.app import make_celery
    from vlmq.tasks.flower import run_flower

    settings = _settings()
    argv = ["flower", f"--port={settings.flower_port}", f"--address={settings.flower_host}"]
    if settings.flower_basic_auth:
        argv.append(f"--basic-auth={settings.flower_basic_auth.get_secret_value()}")
    else:
        os.environ.setdefault("FLOWER_UNAUTHENTICATED_API", "true")
    run_flower(make_celery(settings), argv)  # Flower, with workers re-inspected as they appear


@app.command()
def frontend() -> None:
    """Run the Gradio frontend, pointed at VLMQ_API_URL."""
    from vlmq.frontend.app import launch

    launch(_settings())


# --- using the service -----------------------------------------------------------------------


@app.command("models")
def list_models() -> None:
    """The registry, with workers, readiness and queue depth (asks the API)."""
    settings = _settings()
    with _api_errors(settings), _client(settings) as client:
        rows = client.models()
        groups = client.groups()
    console.print(models_table(rows, console.width))
    for m in rows:
        if m.get("setup_error"):
            console.print(Text(f"{m['name']}: setup error: {m['setup_error']}", style="red"))
    for group in groups:
        console.print(groups_table(group))


def groups_table(group: dict) -> Table:
    """One model group: per group worker, the members it holds and its memory."""
    limit = f"max {group['max_loaded']} loaded" + (f", {group['max_memory_gb']} GB" if group["max_memory_gb"] else "")
    table = Table(title=f"group {group['name']}: {len(group['members'])} models, {limit}", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, title_justify="left")
    table.add_column("group worker", overflow="fold")
    table.add_column("holds", overflow="fold")
    table.add_column("weights", justify="right", no_wrap=True)
    table.add_column("memory", justify="right", no_wrap=True)
    table.add_column("loads", justify="right", no_wrap=True)
    for worker in group["workers"]:
        holds = ", ".join(h["model"] + ("" if h["state"] == "ready" else f" ({h['state']})") for h in worker["holds"])
        table.add_row(worker["name"], holds or "-", _mib(worker["weights_bytes"]), _mib(worker["rss_bytes"]),
                      str(worker["loads"]))
    if not group["workers"]:
        table.add_row("(none online)", "-", "-", "-", "-")
    return table


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def models_table(rows: list[dict], width: int = 80) -> Table:
    """Readable at `width` (80 columns and up): a model name is never cut. Its column does not wrap
    and is as wide as the longest name; tasks wrap between words and long sources fold. Names too long
    to leave room for the other columns get one block per model instead of a row."""
    longest = max((len(m["name"]) for m in rows), default=5)
    readiness = ["yes" if m["ready"] else "error" if m.get("setup_error") else "on use" if m.get("group") else "no"
                 for m in rows]
    if longest > width - 50:  # 33 for ready, workers, queued and the gaps; tasks and source need the rest
        table = Table(box=None, show_header=False, show_edge=False, pad_edge=False)
        table.add_column(overflow="fold")
        for m, ready in zip(rows, readiness, strict=True):
            table.add_row(Text(m["name"], style="bold"))
            table.add_row(f"    tasks: {' '.join(m['tasks'])}   ready: {ready}   workers: {m['workers_online']}   "
                          f"queued: {m['queue_depth']}")
            table.add_row(f"    source: {m['source']}")
        return table
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("model", no_wrap=True, overflow="fold", min_width=longest)
    table.add_column("tasks")
    table.add_column("ready", no_wrap=True)
    table.add_column("workers", justify="right", no_wrap=True)
    table.add_column("queued", justify="right", no_wrap=True)
    table.add_column("source", overflow="fold")
    for m, ready in zip(rows, readiness, strict=True):
        table.add_row(m["name"], " ".join(m["tasks"]), ready, str(m["workers_online"]), str(m["queue_depth"]),
                      m["source"])
    return table


@app.command()
def submit(
    image: Annotated[str, typer.Argument(help="Image file, http(s) URL or data URI.")],
    type: Annotated[str, typer.Option("--type", "-t", help=", ".join(JOB_TYPES) + ".")] = "caption",
    model: Annotated[str | None, typer.Option(help="Model (default: the first ready model for the type).")] = None,
    question: Annotated[str | None, typer.Option(help="The job's free text (same as --prompt): vqa: the question.")] = None,
    prompt: Annotated[str | None, typer.Option(help="The job's free text: detect: 'detect a ; b'; caption: a prefix; chat: the message.")] = None,
    models: Annotated[str | None, typer.Option(help="A fan-out (compare): comma-separated models.")] = None,
    task: Annotated[str, typer.Option(help="A fan-out (compare): the task every model runs.")] = "caption",
    params: Annotated[str | None, typer.Option(help="Extra fields as JSON, e.g. '{\"num_beams\": 3}'.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the result, with a progress display.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 300,
) -> None:
    """Submit one job; with --wait, follow it to the end and print the result as JSON.

    Exit codes: 2 bad input, 3 API unreachable, 4 refused, 5 the job failed, 7 --timeout passed."""
    from vlmq.client import FINAL

    # Everything local is checked before the API is asked anything.
    if type not in JOB_TYPES:
        _fail(EXIT_USAGE, f"unknown --type {type!r}; one of {', '.join(JOB_TYPES)}")
    fan_out = JOB_TYPES_BY_NAME[type].fan_out
    if fan_out and task not in MODEL_JOB_TYPES:
        _fail(EXIT_USAGE, f"unknown --task {task!r}; one of {', '.join(MODEL_JOB_TYPES)}")
    fields = _params(params)
    upload = _image(image)
    settings = _settings()
    if fan_out:
        inner = {"type": task, **_type_fields(task, question or prompt)}
        fields.update(models=[m.strip() for m in (models or "").split(",") if m.strip()], task=inner)
    else:
        fields.update(_type_fields(type, question or prompt))
    with _api_errors(settings), _client(settings) as client:
        if not fan_out:
            fields["model"] = model or _default_model(client, type, settings)
        job = client.submit(upload, type=type, **fields)
        if wait and job["status"] not in FINAL:
            job = _follow(client, job["id"], timeout)
    sys.stdout.write(json.dumps(job, indent=2) + "\n")
    if not wait or job["status"] == "succeeded":
        return
    if job["status"] not in FINAL:
        _fail(EXIT_WAIT_TIMEOUT, f"job {job['id']} is still {job['status']} after {timeout:g}s (--timeout)")
    error = job.get("error") or {}
    reason = f": {error.get('code')}: {error.get('message')}" if error else ""
    if job.get("cancel_reason"):
        reason = f": {job['cancel_reason']}"
    _fail(EXIT_JOB_FAILED, f"job {job['id']} {job['status']}{reason}")


def _params(params: str | None) -> dict:
    if not params:
        return {}
    try:
        fields = json.loads(params)
    except json.JSONDecodeError as exc:
        _fail(EXIT_USAGE, f"--params is not valid JSON: {exc}")
    if not isinstance(fields, dict):
        _fail(EXIT_USAGE, f"--params must be a JSON object ({{...}}), not {params!r}")
    return fields


def _image(image: str) -> str | bytes:
    """URLs and data URIs as they are; a file's bytes, read here so a bad path is a usage error."""
    if image.startswith(("http://", "https://", "data:")):
        return image
    try:
        return Path(image).read_bytes()
    except OSError as exc:
        _fail(EXIT_USAGE, f"cannot read the image file {image!r}: {exc.strerror or exc}")


def _type_fields(job_type: str, text: str | None) -> dict:
    """The job type's example fields (vlmq/jobtypes/), the free text given in its place."""
    spec = JOB_TYPES_BY_NAME[job_type]
    return {**spec.example, **spec.params.text_fields(text)}


def _default_model(client, job_type: str, settings: Settings) -> str:
    candidates = [m for m in client.models() if job_type in m["tasks"]]
    if not candidates:
        _fail(EXIT_USAGE, f"no model of the API at {settings.api_url} runs {job_type}")
    ready = [m for m in candidates if m["ready"]]
    return (ready or candidates)[0]["name"]


def _follow(client, job_id: str, timeout: float) -> dict:
    began = time.monotonic()
    try:
        with err_console.status("queued") as status:  # stderr: stdout carries the JSON

            def show(job: dict) -> None:
                status.update(f"{job['status']}  {time.monotonic() - began:5.1f}s  job {job_id}")

            return client.wait(job_id, timeout=timeout, on_update=show)
    except KeyboardInterrupt:
        _fail(EXIT_INTERRUPTED, f"stopped waiting; job {job_id} goes on (GET /v1/jobs/{job_id})")


# --- keys --------------------------------------------------------------------------------------


def _key_store(settings: Settings):
    from vlmq.keys import KeyStore

    return KeyStore(_redis(settings))


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who the key is for.")],
    rate: Annotated[float, typer.Option(help="Sustained submits per second.")] = 10.0,
    burst: Annotated[int, typer.Option(help="Submits allowed at once before the rate applies.")] = 50,
    admin: Annotated[bool, typer.Option(help="May use /v1/admin (e.g. clear the cache).")] = False,
) -> None:
    """Create an API key. The key is printed once; only its hash is stored."""
    if rate <= 0 or burst < 1:
        _fail(EXIT_USAGE, f"--rate must be > 0 and --burst >= 1 (got {rate:g}, {burst})")
    settings = _settings()
    with _redis_errors(settings):
        key, record = _key_store(settings).create(name, rate=rate, burst=burst, admin=admin)
    console.print(f"id:             {record.id}\nkey:            {key}\nwebhook secret: {record.webhook_secret}",
                  soft_wrap=True, highlight=False)
    console.print("[yellow]Keep the key now: it cannot be shown again.[/yellow]")


@keys_app.command("list")
def keys_list() -> None:
    """Keys by id and name (never the keys themselves)."""
    settings = _settings()
    with _redis_errors(settings):
        keys = _key_store(settings).list()
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("id", no_wrap=True, overflow="fold")
    table.add_column("name", overflow="fold")
    table.add_column("rate/s", justify="right", no_wrap=True)
    table.add_column("burst", justify="right", no_wrap=True)
    table.add_column("admin", no_wrap=True)
    for key in keys:
        table.add_row(key.id, key.name, f"{key.rate:g}", str(key.burst), "yes" if key.admin else "no")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")]) -> None:
    """Revoke a key: its requests get 401 from now on."""
    settings = _settings()
    with _redis_errors(settings):
        revoked = _key_store(settings).revoke(key_id)
    if not revoked:
        _fail(EXIT_USAGE, f"no key {key_id!r} (see vlmq keys list)")
    console.print(f"revoked {key_id}", highlight=False)


@keys_app.command("secret")
def keys_secret() -> None:
    """The secret that signs webhooks of jobs sent without a key."""
    from vlmq.webhook_secrets import anonymous_secret

    settings = _settings()
    with _redis_errors(settings):
        secret = anonymous_secret(_redis(settings), settings)
    sys.stdout.write(secret + "\n")


@cache_app.command("clear")
def cache_clear(model: Annotated[str | None, typer.Option(help="Only this model (default: all).")] = None) -> None:
    """Drop cached answers, for one model or all (asks the API: every replica stops serving them)."""
    settings = _settings()
    with _api_errors(settings), _client(settings) as client:
        result = client.clear_cache(model)
        line = f"cleared {', '.join(result['models'])} ({result['dropped']} entries here)"
    console.print(line, highlight=False)


# --- models ------------------------------------------------------------------------------------


@demo_app.command("build")
def demo_build(force: Annotated[bool, typer.Option(help="Rebuild even if present.")] = False) -> None:
    """Build the tiny random-weight demo models (seconds, offline) under the data dir."""
    from vlmq.tasks.demo import build_demo_models

    settings = _settings(find_stack=False)
    began = time.perf_counter()
    try:
        paths = build_demo_models(settings.demo_models_dir, force=force)
    except OSError as exc:
        _fail(EXIT_LOCAL_FILES, f"cannot build the demo models in {settings.demo_models_dir}: {exc}")
    console.print(f"{len(paths)} demo models in {settings.demo_models_dir} ({time.perf_counter() - began:.1f}s)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
