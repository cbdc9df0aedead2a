"""Schemathesis against the live API's OpenAPI schema: no 5xx, no response off its schema.

Runs the schemathesis command line (its pytest plugin does not load on this pytest) with a
bounded number of examples per operation.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance"


def test_fuzzing_finds_no_server_error_and_no_off_schema_response(stack, tmp_path) -> None:
    here = str(Path(sys.executable).parent)  # the venv's bin, also when it is not on PATH
    binary = shutil.which("schemathesis", path=here) or shutil.which("schemathesis")
    if binary is None:
        pytest.fail("schemathesis is not installed: scripts/setup.sh --dev installs it")
    result = subprocess.run(
        [binary, "run", f"{stack.url}/openapi.json", "--checks", CHECKS, "--max-examples", "25",
         "--exclude-path-regex", ".*/events$", "--request-timeout", "30", "--workers", "2",
         "--phases", "examples,coverage,fuzzing", "--seed", "7"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
