"""What every job type shares: the type enum, decoding options and the params base class.

A job type is one module in this package holding its `Params` (what a client sends besides the
model and the image) and its `Output` (what a worker returns), both pydantic models. Workers get
the params already validated; adapters read them as attributes.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


class JobType(StrEnum):
    caption = "caption"
    vqa = "vqa"
    detect = "detect"
    chat = "chat"
    compare = "compare"


#: Characters that are never text: C0 controls but tab, newline and carriage return, DEL, C1 controls.
#: (Lone surrogates, which JSON can spell, are refused by pydantic before any pattern.)
CONTROL_CHARS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
#: ... and characters that show nothing: whitespace, zero-width and other format characters.
BLANK_CHARS = r"\x00-\x20\x7f-\xa0\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\ufeff"
#: Free text (a question, a prompt, a chat turn): no control character, at least one visible one.
#: The same pattern is in the OpenAPI schema, so what the schema allows is what the API accepts.
TEXT_PATTERN = f"^[^{CONTROL_CHARS}]*[^{BLANK_CHARS}][^{CONTROL_CHARS}]*$"
_TEXT = re.compile(TEXT_PATTERN)


def _visible_text(value: str) -> str:
    if not _TEXT.fullmatch(value):
        if re.search(f"[{CONTROL_CHARS}]", value):
            raise ValueError("must not hold control characters (NUL, escape, ...)")
        raise ValueError("must hold visible text (not only spaces or zero-width characters)")
    return value


#: A free-text field. Give its length limits with `Field(min_length=..., max_length=...)`.
Text = Annotated[str, AfterValidator(_visible_text), Field(json_schema_extra={"pattern": TEXT_PATTERN})]


class StrictModel(BaseModel):
    """Unknown fields are an error: a typo in a parameter must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Decoding(StrictModel):
    """How tokens are chosen: `greedy`, `nucleus` (needs `top_p`) or `temperature` (needs `temperature`)."""

    strategy: Literal["greedy", "nucleus", "temperature"] = "greedy"
    top_p: float | None = Field(None, gt=0, le=1)
    temperature: float | None = Field(None, gt=0, le=5)

    @model_validator(mode="after")
    def _needs_its_value(self) -> Decoding:
        if self.strategy == "nucleus" and self.top_p is None:
            raise ValueError("decoding strategy 'nucleus' needs top_p")
        if self.strategy == "temperature" and self.temperature is None:
            raise ValueError("decoding strategy 'temperature' needs temperature")
        return self

    @property
    def sampled(self) -> bool:
        return self.strategy != "greedy"

    def generate_kwargs(self) -> dict[str, Any]:
        if self.strategy == "nucleus":
            return {"do_sample": True, "top_p": self.top_p, "top_k": 0}
        if self.strategy == "temperature":
            return {"do_sample": True, "temperature": self.temperature, "top_k": 0}
        return {"do_sample": False}


class Params(StrictModel):
    """Base of every job type's params. `sampled` says whether two runs may differ."""

    type: JobType
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Fixes sampled decoding.")

    @property
    def sampled(self) -> bool:
        return False

    def prompt_text(self) -> str | None:
        """The free text of the request (question, prompt, last user turn): the cache's question."""
        return None
