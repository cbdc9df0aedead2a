"""`explain`: where the model looked. A caption (no question) or an answer (a question), and for each
generated token a heatmap over the image's patch grid: how much of the model's attention, when it
chose that token, went to each patch.

Each token's `heat` is a row-major `grid[0] x grid[1]` array of float16 (little-endian, base64) that
sums to 1 (the model's [CLS]/global token left out). How a model aggregates its attention is its
adapter's and is named in `method` (BLIP: mean over heads of the last layers' cross-attention; for
VQA, the answer's attention to the question times the question's attention to the image).

Artifacts: `overlay.png`, the whole answer's heat (the tokens' mean) laid over the image at its
original size and orientation; with `token_images`, `token/<i>.png` for each token too.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field, field_validator

from vlmq.jobtypes.base import (
    Decoding,
    Generated,
    GenerativeParams,
    JobTypeSpec,
    Params,
    StrictModel,
    Text,
    WithArtifacts,
    beam_kwargs,
)

#: How opaque the heat's colour is where the heat is highest (it fades to clear where it is lowest).
OVERLAY_OPACITY = 0.6


class ExplainParams(GenerativeParams):
    type: Literal["explain"] = "explain"
    question: Text | None = Field(None, max_length=1000,
                                  description="A question for a VQA model; none: a captioning model captions.")
    max_new_tokens: int = Field(20, ge=1, le=64)
    num_beams: int = Field(1, ge=1, le=8)
    decoding: Decoding = Decoding()
    token_images: bool = Field(False, description="Also render token/<i>.png, one overlay per token.")

    question_field = "question"

    @property
    def sampled(self) -> bool:
        return self.decoding.sampled

    def generate_kwargs(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, **beam_kwargs(self.num_beams), **self.decoding.generate_kwargs()}

    @field_validator("question")
    @classmethod
    def _stripped(cls, value: str | None) -> str | None:
        return value.strip() if value is not None else None


class TokenHeat(StrictModel):
    text: str = Field(..., description="The token as decoded on its own.")
    heat: str = Field(..., description="float16 grid (row-major, little-endian), base64; sums to 1.")


class ExplainOutput(WithArtifacts, Generated):
    text: str
    grid: list[int] = Field(..., min_length=2, max_length=2, description="[rows, columns] of the patch grid.")
    tokens: list[TokenHeat]
    method: str = Field(..., description="Which attention was aggregated, and how.")


def encode_heat(heat: np.ndarray) -> str:
    return base64.b64encode(np.asarray(heat, dtype="<f2").tobytes()).decode()


def decode_heat(text: str, grid: list[int]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32).reshape(grid)


def _colour(heat: np.ndarray) -> np.ndarray:
    """A blue -> green -> yellow -> red ramp of values in [0, 1] (H, W) to RGB (H, W, 3) floats."""
    stops = np.array([0.0, 0.35, 0.65, 1.0])
    ramp = np.array([[40, 60, 220], [40, 200, 90], [250, 220, 40], [230, 30, 30]], dtype=np.float32)
    return np.stack([np.interp(heat, stops, ramp[:, c]) for c in range(3)], axis=-1)


def blend(image: Image.Image, heat: np.ndarray, opacity: float = OVERLAY_OPACITY) -> Image.Image:
    """`heat` (a patch grid) stretched over `image`, coloured, more opaque where hotter. Coloured at
    the grid's size, then stretched and composited by Pillow."""
    top = float(heat.max())
    scaled = np.clip(heat / top if top > 0 else heat, 0, 1)
    rgba = np.concatenate([_colour(scaled), (opacity * 255 * scaled)[..., None]], axis=-1)
    layer = Image.fromarray(rgba.round().astype(np.uint8)).resize(image.size, Image.BILINEAR)
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")


def overlay(image: Image.Image, heat: np.ndarray, opacity: float = OVERLAY_OPACITY) -> bytes:
    """`blend` as PNG bytes, at the fastest compression level (a full-size photo's overlay costs
    mostly its encoding)."""
    buffer = io.BytesIO()
    blend(image, heat, opacity).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def render(image: Image.Image, output: Any, params: Params) -> dict[str, bytes]:
    explained = ExplainOutput.model_validate(output)
    heats = [decode_heat(token.heat, explained.grid) for token in explained.tokens]
    if not heats:
        return {"overlay.png": overlay(image, np.zeros(explained.grid, dtype=np.float32))}
    files = {"overlay.png": overlay(image, np.mean(heats, axis=0))}
    if getattr(params, "token_images", False):
        files.update({f"token/{i}.png": overlay(image, heat) for i, heat in enumerate(heats)})
    return files


JOB_TYPE = JobTypeSpec(
    name="explain", title="Explain", summary="Caption or answer, with where the model looked for each word.",
    params=ExplainParams, output=ExplainOutput, order=25, full_image=True, artifacts=render,
    example={"max_new_tokens": 12},
)
