"""What every job type shares: the spec a job-type module declares, decoding options, the params base.

A job type is one module in this package. It declares `JOB_TYPE = JobTypeSpec(...)`: its `Params`
(what a client sends besides the model and the image) and its `Output` (what a worker returns), both
pydantic models, and what the rest of vlmq needs to know of it (streamed or not, semantically
cacheable or not, the image at full size or not, its artifacts). `vlmq.jobtypes` discovers the
modules; the API's request union, compare's task union, the cache, the CLI, the artifact route and
the frontend's tabs are derived from what they declare. Workers get the params already validated;
adapters read them as attributes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from PIL import Image


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


class Usage(StrictModel):
    """Tokens a generative model read (the prompt, image tokens included) and wrote (its end token
    included)."""

    prompt_tokens: int = Field(..., ge=0)
    completion_tokens: int = Field(..., ge=0)


class Generated(StrictModel):
    """Base of a generative type's output: its token counts and why its generation ended."""

    usage: Usage | None = Field(None, description="Generative models only.")
    finish_reason: Literal["stop", "length"] | None = Field(
        None, description="Why generation ended: `stop` (an end token or a `stop` string), `length` (it used "
        "every token it was allowed). Generative models only.")


#: Strings that end generation where the model writes one (OpenAI's `stop`): the text ends before it.
Stop = Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(min_length=1, max_length=4)]


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

    type: str
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Fixes sampled decoding.")

    #: The free-text field (a question, a prompt): the cache keys a request by the other params and
    #: matches this text exactly (or, for a semantic type, by meaning). None: no free text.
    question_field: ClassVar[str | None] = None

    @property
    def sampled(self) -> bool:
        return False

    def split_question(self) -> tuple[str | None, dict[str, Any]]:
        """(the free text, every other parameter as JSON data)."""
        data = self.model_dump(mode="json")
        return (data.pop(self.question_field, None) if self.question_field else None), data

    @classmethod
    def text_fields(cls, text: str | None) -> dict[str, Any]:
        """The fields that put a user's free text where this type takes it (CLI --prompt, a UI text box)."""
        return {cls.question_field: text} if cls.question_field and text else {}


class FanOutParams(Params):
    """Params of a fan-out type (`fan_out=True`; vlmq/fanout.py): one child job per branch."""

    def branches(self) -> list[tuple[str, Params]]:
        """(model, params) of each child job, in order."""
        raise NotImplementedError


class GenerativeParams(Params):
    """Params of a type a model may answer with `generate` (token by token, cancellable between
    tokens). `generate_kwargs()` is the one place a job's params become `generate` arguments."""

    max_new_tokens: int = Field(30, ge=1, le=256)

    def generate_kwargs(self) -> dict[str, Any]:
        """`model.generate` arguments; always with `num_beams` (the streamer runs without beam search)."""
        return {"max_new_tokens": self.max_new_tokens, "num_beams": 1, "do_sample": False}


def beam_kwargs(num_beams: int, early_stopping: bool = False) -> dict[str, Any]:
    """`num_beams` (and `early_stopping`, which only means something for beam search)."""
    kwargs: dict[str, Any] = {"num_beams": num_beams}
    if num_beams > 1:
        kwargs["early_stopping"] = early_stopping
    return kwargs


#: A job type's artifacts: files made from the job's image, its validated output and its params, by name
#: (served at `GET /v1/jobs/{id}/artifacts/{name}`; a name may hold "/").
Artifacts = Callable[["Image.Image", Any, "Params"], dict[str, bytes]]


@dataclass(frozen=True)
class JobTypeSpec:
    """Everything vlmq needs to know about a job type; its module declares one as `JOB_TYPE`."""

    name: str  # the `type` of a request: lowercase letters
    title: str  # for people: UI tab, schema names ("Caption" -> CaptionRequest)
    summary: str  # one line: what the job does
    params: type[Params]
    output: type[BaseModel]
    order: int = 100  # where it comes in lists (API docs, CLI, the frontend's tabs)
    streams: bool = False  # its text is streamed as it is generated (SSE `output` events, webhooks)
    semantic: bool = False  # a paraphrase of its question may answer it (the semantic cache tier)
    full_image: bool = False  # workers decode the image at full size (outputs in original pixels)
    artifacts: Artifacts | None = None  # files written beside the output (an annotated image, a mask)
    fan_out: bool = False  # runs as one child job per model (compare), on no model of its own
    example: dict[str, Any] = field(default_factory=dict)  # params of a small valid request (CLI, UI defaults)


class WithArtifacts(StrictModel):
    """Base of an output whose job type declares artifacts: their URLs, set by the worker."""

    artifacts: dict[str, str] | None = Field(
        None, description="name -> URL (`/v1/jobs/{id}/artifacts/{name}`) of each file made for this job.")
