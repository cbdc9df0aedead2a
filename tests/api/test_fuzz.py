"""Schemathesis against the live API's OpenAPI schema, every check (`--checks all`): no 5xx, no
response off its schema, schema-valid requests accepted and schema-violating ones refused, 405 with
`Allow` for undeclared methods, `Allow` on OPTIONS matching the schema, created resources found.

Runs the schemathesis command line (its pytest plugin does not load on this pytest) with a bounded
number of examples per operation, in phases examples, coverage, fuzzing and stateful, with the
settings in tests/api/schemathesis.toml (what a JSON Schema cannot say, and why). One worker: with
two, hypothesis trips over a CPython 3.11 `ast.parse` thread bug inside schemathesis itself.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.processes import start_api

CONFIG = Path(__file__).with_name("schemathesis.toml")
MODELS = Path(__file__).with_name("fuzz-models.toml")


@pytest.fixture(scope="module")
def fuzz_api(base_env: dict[str, str], log_dir: Path):
    """An API of its own, on the tests' Redis, whose registry is tests/api/fuzz-models.toml: the schema
    lists those models, so schemathesis queues valid jobs for them, away from every other test's."""
    env = {**base_env, "VLMQ_MODELS_FILE": str(MODELS), "VLMQ_MODELS": "{}", "VLMQ_GROUPS": "{}"}
    proc, url = start_api(env, log_dir)
    yield url
    proc.stop()


def test_schemathesis_all_checks_pass(fuzz_api: str, tmp_path: Path) -> None:
    here = str(Path(sys.executable).parent)  # the venv's bin, also when it is not on PATH
    binary = shutil.which("schemathesis", path=here) or shutil.which("schemathesis")
    if binary is None:
        pytest.fail("schemathesis is not installed: scripts/setup.sh --dev installs it")
    result = subprocess.run(
        [binary, "--config-file", str(CONFIG), "run", f"{fuzz_api}/openapi.json", "--checks", "all",
         "--max-examples", "25", "--exclude-path-regex", ".*/events$|^/openai/.*", "--request-timeout", "30", "--workers", "1",
         "--phases", "examples,coverage,fuzzing,stateful", "--seed", "7"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
