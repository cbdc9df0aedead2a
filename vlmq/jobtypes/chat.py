"""`chat`: a multi-turn conversation about one image, through the model's own chat template."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from vlmq.jobtypes.base import Generated, GenerativeParams, JobTypeSpec, Stop, StrictModel, Text


class ChatMessage(StrictModel):
    role: Literal["system", "user", "assistant"]
    content: Text = Field(..., min_length=1, max_length=8000)


class ChatParams(GenerativeParams):
    type: Literal["chat"] = "chat"
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=64)
    max_new_tokens: int = Field(128, ge=1, le=2048)
    temperature: float = Field(0.3, ge=0, le=2, description="0 means greedy decoding.")
    top_p: float = Field(0.7, gt=0, le=1)
    repetition_penalty: float = Field(1.0, ge=1, le=2)
    stop: Stop | None = Field(None, description="Up to 4 strings: generation ends where the model writes one, "
                              "and the text ends before it.")

    @field_validator("messages")
    @classmethod
    def _well_formed(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        roles = [m.role for m in messages]
        if "system" in roles[1:]:
            raise ValueError("a system message may only come first")
        if roles[-1] != "user":
            raise ValueError("the last message must be the user's")
        return messages

    @property
    def sampled(self) -> bool:
        return self.temperature > 0

    def split_question(self) -> tuple[str | None, dict[str, Any]]:
        """A single user turn is the question; a conversation's whole history is part of the scope."""
        data = self.model_dump(mode="json")
        if len(self.messages) == 1:
            data.pop("messages")
            return self.messages[0].content, data
        return None, data

    @classmethod
    def text_fields(cls, text: str | None) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": text}]} if text else {}

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": 1,
                                  "repetition_penalty": self.repetition_penalty}
        if self.sampled:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False)
        return kwargs


class ChatOutput(Generated):
    text: str


JOB_TYPE = JobTypeSpec(
    name="chat", title="Chat", summary="A conversation about an image.", params=ChatParams, output=ChatOutput,
    order=40, streams=True, semantic=True,
    example={"messages": [{"role": "user", "content": "Describe this image."}]},
)
