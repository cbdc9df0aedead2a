"""The frontend app builds without a GPU, without the API, and imports nothing of the model side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

PROBE = """
import json, sys
from vlmq.frontend.app import build_app
from vlmq.settings import Settings
demo = build_app(Settings(api_url="http://127.0.0.1:9", data_dir=sys.argv[1]))
heavy = ("torch", "transformers", "vlmq.api", "vlmq.tasks", "vlmq.cache", "celery", "redis")
print(json.dumps({
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in heavy or m.startswith(heavy)),
    "examples": {k: str(v) for k, v in demo.vlmq_context.examples.items()},
    "type": type(demo).__name__,
}))
"""


def test_the_app_is_a_pure_http_client(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], check=False, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["type"] == "Blocks"
    assert report["loaded"] == [], f"the frontend imported model-side modules: {report['loaded']}"
    # The example photos are scikit-image's real photos, written at start.
    examples = {name: Path(path) for name, path in report["examples"].items()}
    assert {"astronaut", "chelsea", "coffee"} <= set(examples)
    with Image.open(examples["astronaut"]) as photo:
        assert photo.size == (512, 512) and photo.mode == "RGB"
        pixels = np.asarray(photo, dtype=np.float32)
    assert np.abs(pixels - data.astronaut().astype(np.float32)).mean() < 3  # the photo itself (as JPEG)


def test_the_last_handler_to_start_owns_a_tab() -> None:
    from vlmq.frontend.context import Leases

    leases = Leases()
    resumed = leases.take("session-1", "caption")
    assert resumed.held
    other_tab = leases.take("session-1", "vqa")
    other_session = leases.take("session-2", "caption")
    submitted = leases.take("session-1", "caption")  # a new job in the same tab of the same page
    assert submitted.held and not resumed.held
    assert other_tab.held and other_session.held
    resumed.release()  # an old handler ending frees nothing of the new one's
    assert submitted.held
    submitted.release()
    other_tab.release()
    other_session.release()
    assert len(leases) == 0
    assert leases.take(None, "caption").held and leases.take(None, "caption").held  # no session: never shared
