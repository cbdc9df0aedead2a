"""What every tab shares: API clients, the frontend's own files, and the example photos.

The frontend is a pure HTTP client of the API: the only way it reaches jobs and models is
`vlmq.client` (`AsyncClient` for handlers; the sync `Client` only for `artifact`, which the async
client lacks). Its files live in `<data_dir>/frontend/` (a temp folder when that is not writable):

* `examples/`: real photos shipped with scikit-image, written once at start;
* `inputs/`: a copy of each submitted image, named by its content hash, so that after a page
  reload the tab shows the image its remembered job was run on (the API serves no input images);
* `artifacts/`: jobs' artifacts (a detect job's annotated PNG, ...), fetched from the API.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmq.client import AsyncClient, Client
from vlmq.settings import Settings

log = logging.getLogger("vlmq.frontend")

#: name -> (scikit-image loader name, caption shown under the example)
EXAMPLE_PHOTOS: dict[str, str] = {
    "astronaut": "astronaut",
    "chelsea": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
}
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,5}$")
_KEY = re.compile(r"^[0-9a-f]{16,64}$")


def write_examples(folder: Path) -> dict[str, Path]:
    """The example photos as JPEG files in `folder` (written once; real photos, not noise)."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, loader in EXAMPLE_PHOTOS.items():
        path = folder / f"{name}.jpg"
        if not path.exists():
            pixels = getattr(data, loader)()
            tmp = path.with_suffix(".tmp")
            Image.fromarray(pixels).convert("RGB").save(tmp, format="JPEG", quality=92)
            tmp.replace(path)
        paths[name] = path
    return paths


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".probe"
        probe.write_text("ok")
        probe.unlink()
        return True
    except OSError:
        return False


@dataclass
class Files:
    root: Path
    max_age_s: float = 86_400
    _saves: int = 0

    def __post_init__(self) -> None:
        for sub in ("examples", "inputs", "artifacts"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @classmethod
    def under(cls, data_dir: Path, max_age_s: float) -> Files:
        root = Path(data_dir) / "frontend"
        if not _writable(root):
            root = Path(tempfile.gettempdir()) / "vlmq-frontend"
        return cls(root.resolve(), max_age_s)

    @property
    def examples_dir(self) -> Path:
        return self.root / "examples"

    def keep_input(self, path: str | Path) -> str:
        """Copy an uploaded image under its content hash; returns the key the browser remembers."""
        source = Path(path)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:32]
        suffix = source.suffix.lower() if _SUFFIX.match(source.suffix) else ".img"
        target = self.root / "inputs" / f"{digest}{suffix}"
        if not target.exists():
            tmp = target.with_suffix(target.suffix + ".tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(target)
        self._saves += 1
        if self._saves % 50 == 1:
            self.prune()
        return digest

    def input_path(self, key: str | None) -> str | None:
        """The kept image of `key`, if it is still here (keys are checked: no path from the browser)."""
        if not key or not _KEY.match(key):
            return None
        for candidate in (self.root / "inputs").glob(f"{key}.*"):
            if not candidate.name.endswith(".tmp"):
                return str(candidate)
        return None

    def artifact_path(self, job_id: str, name: str) -> Path:
        """Where a job's artifact is kept here (job id and name made safe: no path from the API)."""
        safe = re.sub(r"[^A-Za-z0-9_-]", "", job_id)[:64] or "job"
        file = re.sub(r"[^A-Za-z0-9_.-]", "", name).lstrip(".")[:64] or "artifact"
        return self.root / "artifacts" / f"{safe}-{file}"

    def prune(self) -> None:
        """Forget kept images older than the jobs they belong to."""
        cutoff = time.time() - self.max_age_s
        for sub in ("inputs", "artifacts"):
            for path in (self.root / sub).iterdir():
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                except OSError:
                    pass


class Leases:
    """Which handler may update a tab, per browser session: the one that started last.

    A tab's outputs are driven by one job at a time. Starting a job (or clearing the tab) takes
    the tab's lease; a handler still following an older job (say, the one resumed on page load)
    sees it lost the lease and stops quietly. (Gradio's own `cancels=` would do it too, but it
    marks the cancelled event's outputs with an "Error" badge.)
    """

    def __init__(self) -> None:
        self._owner: dict[tuple[str, str], int] = {}
        self._count = itertools.count(1)

    def take(self, session: str | None, tab: str) -> Lease:
        token = next(self._count)
        key = (session or f"no-session-{token}", tab)
        self._owner[key] = token
        return Lease(self, key, token)

    def _held(self, key: tuple[str, str], token: int) -> bool:
        return self._owner.get(key) == token

    def _release(self, key: tuple[str, str], token: int) -> None:
        if self._owner.get(key) == token:
            del self._owner[key]

    def __len__(self) -> int:
        return len(self._owner)


@dataclass(frozen=True)
class Lease:
    leases: Leases
    key: tuple[str, str]
    token: int

    @property
    def held(self) -> bool:
        return self.leases._held(self.key, self.token)

    def release(self) -> None:
        self.leases._release(self.key, self.token)


@dataclass
class Context:
    """Settings-derived things the tabs use."""

    settings: Settings
    files: Files
    examples: dict[str, Path] = field(default_factory=dict)
    timeout_s: float = 30.0
    leases: Leases = field(default_factory=Leases)

    def lease(self, request: Any, tab: str) -> Lease:
        """Take `tab`'s lease for the browser session of a gr.Request."""
        return self.leases.take(getattr(request, "session_hash", None), tab)

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        files = Files.under(settings.data_dir, settings.job_ttl_s)
        try:
            examples = write_examples(files.examples_dir)
        except Exception:
            log.exception("could not write the example photos")
            examples = {}
        return cls(settings, files, examples)

    @property
    def api_url(self) -> str:
        return self.settings.api_url.rstrip("/")

    @property
    def api_key(self) -> str | None:
        key = self.settings.api_key
        return key.get_secret_value() if key is not None else None

    def client(self) -> AsyncClient:
        return AsyncClient(self.api_url, self.api_key, timeout=self.timeout_s)

    def sync_client(self) -> Client:
        return Client(self.api_url, self.api_key, timeout=self.timeout_s)

    def example(self, name: str) -> str | None:
        path = self.examples.get(name)
        return str(path) if path else None

    def example_rows(self, rows: list[tuple[str, Any]] | list[str]) -> list[list[Any]]:
        """Example rows whose photos exist (a photo that could not be written is left out)."""
        out = []
        for row in rows:
            name, *rest = (row,) if isinstance(row, str) else row
            path = self.example(name)
            if path:
                out.append([path, *rest])
        return out
