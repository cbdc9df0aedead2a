"""OpenCV Haar cascades: a real (classical) face and eye detector, no weights to download.

Source ``opencv`` is the cascade folder shipped with opencv-python (`cv2.data.haarcascades`); any
other source is a folder holding cascade XML files with the same names. Labels of the detect
prompt: ``face`` (``faces``) and ``eye`` (``eyes``); eyes are searched in the upper part of each
face found, or in the whole image when there is none. Boxes are in pixels of the original image;
a cascade has no calibrated score, so `score` is None.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vlmq.jobtypes.detect import Box
from vlmq.tasks.adapters.base import GenerationHooks, ItemError, ModelAdapter, SetupError, WorkItem

OPENCV_SOURCE = "opencv"

#: cascade name -> file in the cascade folder
CASCADES = {
    "face": "haarcascade_frontalface_default.xml",
    "eye": "haarcascade_eye.xml",
}
#: label as written in a prompt -> cascade name
LABELS = {"face": "face", "faces": "face", "eye": "eye", "eyes": "eye"}

#: Larger images are searched at this longest side (boxes are scaled back): same faces, far faster.
MAX_SIDE = 1024


def cascade_dir(source: str) -> Path:
    if source == OPENCV_SOURCE:
        import cv2

        return Path(cv2.data.haarcascades)
    return Path(source).expanduser()


class HaarCascadeAdapter(ModelAdapter):
    tasks: ClassVar[frozenset[str]] = frozenset({"detect"})

    def setup(self) -> None:
        import cv2

        folder = cascade_dir(self.source)
        self.cascades: dict[str, Any] = {}
        for name, filename in CASCADES.items():
            path = folder / filename
            if not path.is_file():
                raise SetupError(f"model {self.spec.name}: no cascade {filename} in {folder}")
            cascade = cv2.CascadeClassifier(str(path))
            if cascade.empty():
                raise SetupError(f"model {self.spec.name}: cannot load the cascade {path}")
            self.cascades[name] = cascade

    def revision(self) -> str:
        """A fingerprint of the cascade files' contents."""
        digest = hashlib.sha256()
        folder = cascade_dir(self.source)
        for filename in sorted(CASCADES.values()):
            path = folder / filename
            digest.update(filename.encode())
            digest.update(path.read_bytes() if path.is_file() else b"missing")
        return digest.hexdigest()[:16]

    def predict(self, items: list[WorkItem], hooks: GenerationHooks) -> list[dict | Exception]:
        return [self._detect(item) for item in items]

    def _detect(self, item: WorkItem) -> dict | Exception:
        params = item.params
        unknown = [label for label in params.labels if label.lower() not in LABELS]
        if unknown:
            return ItemError(
                f"this detector finds only {', '.join(sorted(LABELS))}; not {', '.join(map(repr, unknown))}"
            )
        import cv2

        width, height = item.image.size
        gray = np.asarray(item.image.convert("L"))
        scale = min(1.0, MAX_SIDE / max(width, height))
        if scale < 1.0:
            gray = cv2.resize(
                gray, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA
            )
        gray = cv2.equalizeHist(gray)

        faces: list[tuple[int, int, int, int]] | None = None
        boxes: list[Box] = []
        for label in params.labels:
            kind = LABELS[label.lower()]
            if faces is None:
                faces = self._faces(gray)
            found = faces if kind == "face" else self._eyes(gray, faces)
            for x, y, w, h in found:
                boxes.append(
                    Box(
                        label=label,
                        x0=round(min(x / scale, width), 2),
                        y0=round(min(y / scale, height), 2),
                        x1=round(min((x + w) / scale, width), 2),
                        y1=round(min((y + h) / scale, height), 2),
                        score=None,
                    )
                )
        return {"boxes": [box.model_dump() for box in boxes], "width": width, "height": height, "text": None}

    def _faces(self, gray: np.ndarray) -> list[tuple[int, int, int, int]]:
        side = min(gray.shape[:2])
        min_size = max(24, side // 20)
        found = self.cascades["face"].detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size)
        )
        return [tuple(int(v) for v in box) for box in found]  # type: ignore[misc]

    def _eyes(
        self, gray: np.ndarray, faces: list[tuple[int, int, int, int]]
    ) -> list[tuple[int, int, int, int]]:
        cascade = self.cascades["eye"]
        if not faces:
            side = min(gray.shape[:2])
            min_size = max(12, side // 40)
            found = cascade.detectMultiScale(
                gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size)
            )
            return [tuple(int(v) for v in box) for box in found]  # type: ignore[misc]
        eyes: list[tuple[int, int, int, int]] = []
        for fx, fy, fw, fh in faces:
            region = gray[fy : fy + int(fh * 0.6), fx : fx + fw]
            min_size = max(8, fw // 10)
            for x, y, w, h in cascade.detectMultiScale(
                region, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size)
            ):
                eyes.append((fx + int(x), fy + int(y), int(w), int(h)))
        return eyes


Adapter = HaarCascadeAdapter
