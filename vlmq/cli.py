"""The `vlmq` command line (typer): run the service, run one worker, submit jobs, manage models."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vlmq.settings import Settings, get_settings

app = typer.Typer(help="vlmq: asynchronous jobs for vision-language models.", no_args_is_help=True)
demo_app = typer.Typer(help="The offline demo models.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored hashed in Redis).", no_args_is_help=True)
cache_app = typer.Typer(help="The answer cache.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")
app.add_typer(keys_app, name="keys")
app.add_typer(cache_app, name="cache")
console = Console()


def _settings() -> Settings:
    return get_settings()


# --- running the service ---------------------------------------------------------------------


@app.command()
def up(
    models: Annotated[str | None, typer.Option(help="Comma-separated models to start workers for (default: all).")] = None,
    flower: Annotated[bool, typer.Option(help="Start Flower.")] = True,
    frontend: Annotated[bool, typer.Option(help="Start the Gradio frontend.")] = True,
    embedded_redis: Annotated[bool, typer.Option(help="Start the embedded Redis even if one is reachable.")] = False,
) -> None:
    """Run everything: Redis (found or embedded), the API, one worker per model, Flower, the frontend."""
    from vlmq.demo import build_demo_models
    from vlmq.launcher import Service, Supervisor, python_module
    from vlmq.redis_server import choose_redis
    from vlmq.registry import load_registry

    settings = _settings()
    explicit = settings.redis_url if "redis_url" in settings.model_fields_set else None
    try:
        redis_url, embedded = choose_redis(explicit, settings.data_dir, force_embedded=embedded_redis)
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    registry = load_registry(settings)
    if any(spec.is_demo for spec in registry):
        with console.status("building the offline demo models..."):
            build_demo_models(settings.demo_models_dir)
        registry = load_registry(settings)  # checkpoint folders now exist
    chosen = registry.names if not models else [m.strip() for m in models.split(",") if m.strip()]
    for name in chosen:
        if name not in registry:
            console.print(f"[red]unknown model {name!r}; known: {', '.join(registry.names)}[/red]")
            raise typer.Exit(2)

    env = {**os.environ, "VLMQ_REDIS_URL": redis_url, "VLMQ_API_URL": settings.api_url}
    logs = settings.data_dir / "logs"
    services = [Service("api", python_module("vlmq.cli", "api"), restart=True, log_path=logs / "api.log")]
    services += [
        Service(f"worker:{name}", python_module("vlmq.cli", "worker", "--model", name), restart=True,
                log_path=logs / f"worker-{name}.log")
        for name in chosen
    ]
    services.append(Service("webhooks", python_module("vlmq.cli", "webhooks"), restart=True,
                            log_path=logs / "webhooks.log"))
    if flower:
        services.append(Service("flower", python_module("vlmq.cli", "flower"), restart=True, log_path=logs / "flower.log"))
    if frontend:
        services.append(Service("frontend", python_module("vlmq.cli", "frontend"), restart=True,
                                log_path=logs / "frontend.log"))
    supervisor = Supervisor(services, env)
    supervisor.start_all()

    table = Table(title="vlmq is up", show_header=False)
    table.add_row("API", f"{settings.api_url}  (docs: {settings.api_url}/docs)")
    if frontend:
        table.add_row("Frontend", f"http://127.0.0.1:{settings.frontend_port}")
    if flower:
        table.add_row("Flower", f"http://127.0.0.1:{settings.flower_port}")
    table.add_row("Redis", redis_url + ("  (embedded, data in " + str(settings.data_dir / "redis") + ")" if embedded else ""))
    table.add_row("Workers", ", ".join(chosen))
    table.add_row("Logs", str(logs))
    console.print(table)
    if settings.auth_open:
        console.print("[yellow]Open mode: the API binds loopback and accepts requests without an API key "
                      "(VLMQ_AUTH_MODE=required to demand one).[/yellow]")
    console.print("Ctrl-C stops everything.")
    try:
        supervisor.watch()
    finally:
        if embedded:
            embedded.stop()


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default: VLMQ_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: VLMQ_API_PORT).")] = None,
) -> None:
    """Run the API (uvicorn)."""
    import uvicorn

    settings = _settings()
    uvicorn.run(
        "vlmq.api.main:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level="warning",
        access_log=False,
    )


@app.command()
def worker(model: Annotated[str, typer.Option(help="The registry model this worker serves.")]) -> None:
    """Run one Celery worker pinned to MODEL: loads its weights once, consumes only its queue."""
    from vlmq.tasks.worker import run_worker

    raise typer.Exit(run_worker(model, _settings()))


@app.command()
def webhooks(concurrency: Annotated[int, typer.Option(help="Deliveries in flight at once.")] = 8) -> None:
    """Run the webhook delivery worker (its own queue: a slow receiver never holds a model worker)."""
    from vlmq.tasks.webhooks import run_webhook_worker

    raise typer.Exit(run_webhook_worker(_settings(), concurrency))


@app.command()
def flower() -> None:
    """Run Flower against vlmq's broker (basic auth from VLMQ_FLOWER_BASIC_AUTH)."""
    from vlmq.tasks.app import make_celery

    settings = _settings()
    argv = ["flower", f"--port={settings.flower_port}", f"--address={settings.flower_host}"]
    if settings.flower_basic_auth:
        argv.append(f"--basic-auth={settings.flower_basic_auth.get_secret_value()}")
    else:
        os.environ.setdefault("FLOWER_UNAUTHENTICATED_API", "true")
    make_celery(settings).start(argv=argv)


@app.command()
def frontend() -> None:
    """Run the Gradio frontend, pointed at VLMQ_API_URL."""
    from vlmq.frontend.app import launch

    launch(_settings())


# --- using the service -----------------------------------------------------------------------


@app.command("models")
def list_models() -> None:
    """The registry, with workers, readiness and queue depth (asks the API)."""
    from vlmq.client import ApiError, Client

    settings = _settings()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    try:
        with Client(settings.api_url, key) as client:
            rows = client.models()
    except (ApiError, OSError) as exc:
        console.print(f"[red]cannot reach the API at {settings.api_url}: {exc}[/red]")
        raise typer.Exit(1) from exc
    table = Table("model", "tasks", "source", "ready", "workers", "queued", "setup error")
    for m in rows:
        table.add_row(m["name"], ",".join(m["tasks"]), m["source"], "yes" if m["ready"] else "no",
                      str(m["workers_online"]), str(m["queue_depth"]), m["setup_error"] or "")
    console.print(table)


@app.command()
def submit(
    image: Annotated[str, typer.Argument(help="Image file, http(s) URL or data URI.")],
    type: Annotated[str, typer.Option("--type", "-t", help="caption, vqa, detect, chat or compare.")] = "caption",
    model: Annotated[str | None, typer.Option(help="Model (default: the first ready model for the type).")] = None,
    question: Annotated[str | None, typer.Option(help="vqa: the question.")] = None,
    prompt: Annotated[str | None, typer.Option(help="detect: 'detect a ; b'; caption: a prefix; chat: the message.")] = None,
    models: Annotated[str | None, typer.Option(help="compare: comma-separated models.")] = None,
    task: Annotated[str, typer.Option(help="compare: the task every model runs.")] = "caption",
    params: Annotated[str | None, typer.Option(help="Extra fields as JSON, e.g. '{\"num_beams\": 3}'.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the result, with a progress display.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 300,
) -> None:
    """Submit one job; with --wait, follow it to the end and print the result as JSON."""
    from vlmq.client import FINAL, ApiError, Client

    settings = _settings()
    fields: dict = json.loads(params) if params else {}
    if type == "compare":
        inner = {"type": task, **_type_fields(task, question, prompt)}
        fields.update(models=[m.strip() for m in (models or "").split(",") if m.strip()], task=inner)
    else:
        fields.update(_type_fields(type, question, prompt))
    key = settings.api_key.get_secret_value() if settings.api_key else None
    with Client(settings.api_url, key) as client:
        try:
            if type != "compare":
                fields["model"] = model or _default_model(client, type)
            job = client.submit(image, type=type, **fields)
            if wait and job["status"] not in FINAL:
                job = _follow(client, job["id"], timeout)
        except ApiError as exc:
            console.print(f"[red]{exc.status} {exc.code}: {exc.message}[/red]")
            raise typer.Exit(1) from exc
        except OSError as exc:
            console.print(f"[red]cannot reach the API at {settings.api_url}: {exc}[/red]")
            raise typer.Exit(1) from exc
    sys.stdout.write(json.dumps(job, indent=2) + "\n")
    if wait and job["status"] != "succeeded":
        raise typer.Exit(1)


def _type_fields(job_type: str, question: str | None, prompt: str | None) -> dict:
    if job_type == "vqa":
        return {"question": question or "what is in the picture?"}
    if job_type == "detect":
        return {"prompt": prompt or "detect face"}
    if job_type == "chat":
        return {"messages": [{"role": "user", "content": prompt or "Describe this image."}]}
    return {"prompt": prompt} if prompt else {}


def _default_model(client, job_type: str) -> str:
    candidates = [m for m in client.models() if job_type in m["tasks"]]
    if not candidates:
        raise typer.BadParameter(f"no model runs {job_type}")
    ready = [m for m in candidates if m["ready"]]
    return (ready or candidates)[0]["name"]


def _follow(client, job_id: str, timeout: float) -> dict:
    began = time.monotonic()
    with console.status("queued") as status:

        def show(job: dict) -> None:
            status.update(f"{job['status']}  {time.monotonic() - began:5.1f}s  job {job_id}")

        return client.wait(job_id, timeout=timeout, on_update=show)


# --- keys --------------------------------------------------------------------------------------


def _key_store():
    from vlmq.keys import KeyStore
    from vlmq.redis_conn import sync_client

    return KeyStore(sync_client(_settings()))


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who the key is for.")],
    rate: Annotated[float, typer.Option(help="Sustained submits per second.")] = 10.0,
    burst: Annotated[int, typer.Option(help="Submits allowed at once before the rate applies.")] = 50,
    admin: Annotated[bool, typer.Option(help="May use /v1/admin (e.g. clear the cache).")] = False,
) -> None:
    """Create an API key. The key is printed once; only its hash is stored."""
    key, record = _key_store().create(name, rate=rate, burst=burst, admin=admin)
    console.print(f"id:             {record.id}\nkey:            {key}\nwebhook secret: {record.webhook_secret}")
    console.print("[yellow]Keep the key now: it cannot be shown again.[/yellow]")


@keys_app.command("list")
def keys_list() -> None:
    """Keys by id and name (never the keys themselves)."""
    table = Table("id", "name", "rate/s", "burst")
    for key in _key_store().list():
        table.add_row(key.id, key.name, f"{key.rate:g}", str(key.burst))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")]) -> None:
    """Revoke a key: its requests get 401 from now on."""
    if not _key_store().revoke(key_id):
        console.print(f"[red]no key {key_id}[/red]")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")


@keys_app.command("secret")
def keys_secret() -> None:
    """The secret that signs webhooks of jobs sent without a key."""
    from vlmq.redis_conn import sync_client
    from vlmq.webhook_secrets import anonymous_secret

    settings = _settings()
    console.print(anonymous_secret(sync_client(settings), settings))


@cache_app.command("clear")
def cache_clear(model: Annotated[str | None, typer.Option(help="Only this model (default: all).")] = None) -> None:
    """Drop cached answers, for one model or all (asks the API: every replica stops serving them)."""
    from vlmq.client import ApiError, Client

    settings = _settings()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    try:
        with Client(settings.api_url, key) as client:
            result = client.clear_cache(model)
    except (ApiError, OSError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"cleared {', '.join(result['models'])} ({result['dropped']} entries here)")


# --- models ------------------------------------------------------------------------------------


@demo_app.command("build")
def demo_build(force: Annotated[bool, typer.Option(help="Rebuild even if present.")] = False) -> None:
    """Build the tiny random-weight demo models (seconds, offline) under the data dir."""
    from vlmq.demo import build_demo_models

    settings = _settings()
    began = time.perf_counter()
    paths = build_demo_models(settings.demo_models_dir, force=force)
    console.print(f"{len(paths)} demo models in {settings.demo_models_dir} ({time.perf_counter() - began:.1f}s)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
