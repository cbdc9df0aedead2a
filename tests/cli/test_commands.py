"""The command line as a user meets it: the real `vlmq` CLI run as a subprocess, at 80 columns.

Every failure a user can cause or meet is one `error: ...` line on stderr and the exit code of its
kind (README "Exit codes"), never a traceback; tables never cut a model name; commands find the
running stack's Redis and API through its run-state file. The API here is a real `vlmq api`
process with the session's registry (no workers: nothing here needs a model to run).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from tests.utils.images import astronaut, encode
from tests.utils.processes import Proc, start_api
from vlmq.cli import commands as cli
from vlmq.cli import runstate
from vlmq.cli.redis_server import free_port
from vlmq.keyspace import ANONYMOUS_SECRET

ROOT = Path(__file__).resolve().parents[2]
UNSERVED = "blip-spare"  # in the session registry, served by no worker


def run_cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmq.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """A shell with no VLMQ_* set but its own data dir (so no one else's run-state file is found)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VLMQ_", "FORCE_COLOR", "TTY_", "COLUMNS", "LINES"))}
    env.update(COLUMNS="80", VLMQ_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", **extra)
    return env


def error_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The one `error:` line of a failed command, after checking its exit code and that nothing else came."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert done.returncode == code, (done.returncode, done.stderr)
    return lines[0]


@pytest.fixture(scope="module")
def api(base_env: dict[str, str], log_dir: Path) -> tuple[Proc, str]:
    proc, url = start_api(base_env, log_dir)
    yield proc, url
    proc.stop()


@pytest.fixture
def api_url(api: tuple[Proc, str]) -> str:
    return api[1]


@pytest.fixture
def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "astronaut.png"
    path.write_bytes(encode(astronaut()))
    return path


# --- bad input ---------------------------------------------------------------------------------


def test_a_missing_image_file_is_bad_input_naming_the_file(tmp_path: Path, dead_url: str) -> None:
    # The API is down too: the file is checked first, so the line is about the file, not the API.
    done = run_cli("submit", str(tmp_path / "no-such.png"), env=cli_env(tmp_path, VLMQ_API_URL=dead_url), cwd=tmp_path)
    line = error_line(done, cli.EXIT_USAGE)
    assert "no-such.png" in line and "No such file" in line and "API" not in line, line
    unreadable = run_cli("submit", str(tmp_path), env=cli_env(tmp_path, VLMQ_API_URL=dead_url), cwd=tmp_path)
    assert "Is a directory" in error_line(unreadable, cli.EXIT_USAGE)


def test_bad_params_and_an_unknown_type_are_bad_input(tmp_path: Path, image: Path, dead_url: str) -> None:
    env = cli_env(tmp_path, VLMQ_API_URL=dead_url)
    line = error_line(run_cli("submit", str(image), "--params", "{bad", env=env, cwd=tmp_path), cli.EXIT_USAGE)
    assert "--params is not valid JSON" in line, line
    line = error_line(run_cli("submit", str(image), "--params", "[1, 2]", env=env, cwd=tmp_path), cli.EXIT_USAGE)
    assert "JSON object" in line, line
    line = error_line(run_cli("submit", str(image), "--type", "poem", env=env, cwd=tmp_path), cli.EXIT_USAGE)
    assert "'poem'" in line and "caption" in line, line
    line = error_line(run_cli("models", env={**env, "VLMQ_API_PORT": "eighty"}, cwd=tmp_path), cli.EXIT_USAGE)
    assert "VLMQ_API_PORT" in line, line
    for args in (["worker"], ["worker", "--model", "blip-base", "--group", "llava-ft"]):
        line = error_line(run_cli(*args, env=env, cwd=tmp_path), cli.EXIT_USAGE)
        assert "exactly one of --model or --group" in line, line
    line = error_line(run_cli("worker", "--model", "nope", env=env, cwd=tmp_path), cli.EXIT_USAGE)
    assert "unknown model 'nope'" in line and "blip-base" in line, line
    line = error_line(run_cli("worker", "--group", "nope", env=env, cwd=tmp_path), cli.EXIT_USAGE)
    assert "unknown model group 'nope'" in line and "llava-ft" in line, line
    line = error_line(run_cli("worker", "--group", "llava-ft", env=env, cwd=tmp_path), cli.EXIT_USAGE)
    assert "no members" in line, line  # this data dir has no demo checkpoints


# --- the API away, or refusing ---------------------------------------------------------------------


def test_the_api_down_is_one_line_and_its_own_code(tmp_path: Path, image: Path, dead_url: str) -> None:
    env = cli_env(tmp_path, VLMQ_API_URL=dead_url)
    for args in (["models"], ["submit", str(image), "--model", "faces"], ["submit", str(image)],
                 ["cache", "clear"]):
        line = error_line(run_cli(*args, env=env, cwd=tmp_path), cli.EXIT_API_UNREACHABLE)
        assert f"cannot reach the API at {dead_url} (from VLMQ_API_URL)" in line, (args, line)


def test_an_api_refusal_shows_its_status_and_code(tmp_path: Path, image: Path, api_url: str) -> None:
    done = run_cli("submit", str(image), "--model", "no-such-model", env=cli_env(tmp_path, VLMQ_API_URL=api_url),
                   cwd=tmp_path)
    line = error_line(done, cli.EXIT_API_REFUSED)
    assert "422 unknown_model" in line and "no-such-model" in line, line
    assert done.stdout == ""


def test_wait_tells_a_job_that_did_not_succeed_from_one_still_running(tmp_path: Path, image: Path,
                                                                       api_url: str) -> None:
    env = cli_env(tmp_path, VLMQ_API_URL=api_url)
    # No worker serves the model: past its deadline the job ends aborted, and --wait says so.
    done = run_cli("submit", str(image), "--model", UNSERVED, "--params", '{"cancel_after": 0.5}', "--wait",
                   env=env, cwd=tmp_path)
    line = error_line(done, cli.EXIT_JOB_FAILED)
    job = json.loads(done.stdout)
    assert job["status"] == "aborted" and f"job {job['id']} aborted" in line, line
    # --timeout passes first: the job is still queued.
    done = run_cli("submit", str(image), "--model", UNSERVED, "--params", '{"cancel_after": 60}', "--wait",
                   "--timeout", "0.5", env=env, cwd=tmp_path)
    line = error_line(done, cli.EXIT_WAIT_TIMEOUT)
    job = json.loads(done.stdout)
    assert job["status"] == "queued" and "still queued after 0.5s" in line, line
    httpx.post(f"{api_url}/v1/jobs/{job['id']}/cancel", timeout=10).raise_for_status()


# --- tables at 80 columns ----------------------------------------------------------------------


def test_models_shows_every_name_whole_at_80_columns(tmp_path: Path, api_url: str) -> None:
    names = [m["name"] for m in httpx.get(api_url + "/v1/models", timeout=10).json()["models"]]
    assert {"llava-ft@100", "llava-ft@200", "blip-lanes-small"} <= set(names)
    done = run_cli("models", env=cli_env(tmp_path, VLMQ_API_URL=api_url), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout, done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80, done.stdout
    rows = [line.split()[0] for line in done.stdout.splitlines() if line and not line.startswith(" ")]
    for name in names:
        assert name in rows, (name, done.stdout)


def test_keys_list_create_revoke_at_80_columns(tmp_path: Path, redis_url: str) -> None:
    env = cli_env(tmp_path, VLMQ_REDIS_URL=redis_url)
    owner = "the-analytics-team-nightly-batch-jobs-of-the-research-group"
    created = run_cli("keys", "create", owner, "--rate", "2.5", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    key_id = re.search(r"id:\s+(key_[0-9a-f]+)", created.stdout).group(1)
    listed = run_cli("keys", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "…" not in listed.stdout and max(len(line) for line in listed.stdout.splitlines()) <= 80
    assert key_id in listed.stdout.split(), listed.stdout
    assert run_cli("keys", "revoke", key_id, env=env, cwd=tmp_path).returncode == 0
    line = error_line(run_cli("keys", "revoke", key_id, env=env, cwd=tmp_path), cli.EXIT_USAGE)
    assert key_id in line


def test_redis_down_is_one_line_and_its_own_code(tmp_path: Path) -> None:
    dead = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    env = cli_env(tmp_path, VLMQ_REDIS_URL=dead)
    for args in (["keys", "secret"], ["keys", "list"], ["keys", "create", "someone"], ["keys", "revoke", "key_1"]):
        line = error_line(run_cli(*args, env=env, cwd=tmp_path), cli.EXIT_REDIS_UNREACHABLE)
        assert "cannot reach Redis at redis://:***@127.0.0.1" in line and "hunter2" not in line, (args, line)


# --- finding the running stack ----------------------------------------------------------------------


def _write_state(data_dir: Path, pid: int, redis_url: str, api_url: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "run.json").write_text(json.dumps({"pid": pid, "redis_url": redis_url, "api_url": api_url}))


def test_commands_find_the_stack_through_its_run_state_file(tmp_path: Path, api: tuple[Proc, str],
                                                            redis_url: str, dead_url: str) -> None:
    """The file as `vlmq up` writes it, its pid a live vlmq process (the API's); `test_cli_up.py` does
    the same with `vlmq up` itself."""
    api_pid, api_url = api[0].pid, api[1]
    data_dir = tmp_path / "data"
    _write_state(data_dir, api_pid, redis_url, api_url)
    env = cli_env(data_dir)  # a second shell: no VLMQ_REDIS_URL, no VLMQ_API_URL
    secret = run_cli("keys", "secret", env=env, cwd=tmp_path)
    assert secret.returncode == 0, secret.stderr
    assert secret.stdout.strip() == redis.Redis.from_url(redis_url).get(ANONYMOUS_SECRET).decode()
    models = run_cli("models", env=env, cwd=tmp_path)
    assert models.returncode == 0 and "llava-ft@200" in models.stdout, models.stderr
    # Explicit environment wins over the file, and the line says where the URL came from.
    line = error_line(run_cli("models", env={**env, "VLMQ_API_URL": dead_url}, cwd=tmp_path),
                      cli.EXIT_API_UNREACHABLE)
    assert "from VLMQ_API_URL" in line, line
    # The file's API gone: the line names the file it came from.
    _write_state(data_dir, api_pid, redis_url, dead_url)
    line = error_line(run_cli("models", env=env, cwd=tmp_path), cli.EXIT_API_UNREACHABLE)
    assert f"the running `vlmq up`, pid {api_pid}" in line and "run.json" in line, line


def test_a_stale_run_state_file_is_ignored(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    not_vlmq = subprocess.Popen(["sleep", "30"])
    a_vlmq = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "vlmq"])
    try:
        for pid, live in ((gone.pid, False), (not_vlmq.pid, False), (a_vlmq.pid, True)):
            _write_state(tmp_path, pid, "redis://127.0.0.1:1/0", "http://127.0.0.1:1")
            environ = {"VLMQ_API_PORT": "9000"}
            state, filled = runstate.fill_environ(environ, tmp_path)
            assert (state is not None) is live, pid
            assert filled == (["VLMQ_REDIS_URL"] if live else [])  # VLMQ_API_PORT is explicit
            assert environ.get("VLMQ_REDIS_URL") == ("redis://127.0.0.1:1/0" if live else None)
        (tmp_path / "run.json").write_text("{not json")
        assert runstate.read(tmp_path) is None
    finally:
        for proc in (not_vlmq, a_vlmq):
            proc.kill()
            proc.wait()


def test_the_readme_lists_every_exit_code() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Exit codes"):]
    section = section[:section.index("\n#")]
    listed = {int(code) for code in re.findall(r"^\| `(\d+)` \|", section, re.MULTILINE)}
    codes = {value for name, value in vars(cli).items() if name.startswith("EXIT_")}
    assert listed == codes, (listed, codes)

