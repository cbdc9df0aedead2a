"""The README's configuration table is the settings object's, and its two commands exist."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_table_matches_the_settings() -> None:
    from scripts.settings_table import table

    assert table() in (ROOT / "README.md").read_text(), "regenerate with: python scripts/settings_table.py"


def test_the_two_commands_exist_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    for script in ("scripts/run.sh", "scripts/test.sh"):
        assert script in readme and os.access(ROOT / script, os.X_OK)
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
