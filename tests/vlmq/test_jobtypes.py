"""The job-type seam: each module of vlmq/jobtypes declares its spec, and what lists job types is
derived from the modules found (so a new type is one module, and a module that contradicts itself
fails at import, not at its first job)."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import TypeAdapter, ValidationError

from vlmq.api.openapi import FAN_OUTS, REQUESTS
from vlmq.cache import SEMANTIC_JOB_TYPES
from vlmq.cli.commands import JOB_TYPES as CLI_CHOICES
from vlmq.jobs import JobRequest
from vlmq.jobtypes import JOB_TYPES, MODEL_TYPES, SEMANTIC, JobType, JobTypeSpec, Params, _check
from vlmq.jobtypes.base import StrictModel
from vlmq.jobtypes.compare import CompareParams


def test_every_module_is_a_job_type_and_every_list_is_derived() -> None:
    assert list(JOB_TYPES) == ["caption", "vqa", "explain", "detect", "segment", "ocr", "chat", "compare"]  # by `order`
    assert [t.value for t in JobType] == list(JOB_TYPES)
    assert MODEL_TYPES == ("caption", "vqa", "explain", "detect", "segment", "ocr", "chat") and FAN_OUTS == {"compare": "CompareRequest"}
    assert SEMANTIC == SEMANTIC_JOB_TYPES == {"vqa", "chat"}
    assert CLI_CHOICES == tuple(JOB_TYPES)
    assert set(REQUESTS) == set(MODEL_TYPES)
    request = TypeAdapter(JobRequest)
    for name, spec in JOB_TYPES.items():
        body = {"type": name, **spec.example}
        if spec.fan_out:
            body.update(models=["a", "b"], task={"type": "caption"})
        else:
            body["model"] = "m"
        assert request.validate_python(body).type == name
    with pytest.raises(ValidationError):
        request.validate_python({"type": "segment", "model": "m"})


def test_a_fan_outs_task_is_any_type_that_runs_on_one_model() -> None:
    for name in MODEL_TYPES:
        params = CompareParams.model_validate({"models": ["a", "b"], "task": {"type": name, **JOB_TYPES[name].example}})
        assert [(m, p.type) for m, p in params.branches()] == [("a", name), ("b", name)]
    with pytest.raises(ValidationError):
        CompareParams.model_validate({"models": ["a", "b"], "task": {"type": "compare"}})


def test_the_question_is_where_the_type_says() -> None:
    vqa = JOB_TYPES["vqa"].params.model_validate({"question": " what? "})
    assert vqa.split_question() == ("what?", {"type": "vqa", "seed": None, "max_new_tokens": 10, "num_beams": 1,
                                              "top_k": 5})
    chat = JOB_TYPES["chat"].params
    assert chat.model_validate(chat.text_fields("hi")).split_question()[0] == "hi"
    two_turns = chat.model_validate({"messages": [{"role": "user", "content": "a"},
                                                  {"role": "assistant", "content": "b"},
                                                  {"role": "user", "content": "c"}]})
    assert two_turns.split_question()[0] is None  # a conversation: the whole history is the scope
    assert JOB_TYPES["ocr"].params.text_fields("ignored") == {}


class _Params(Params):
    type: Literal["thing"] = "thing"
    prompt: str = ""


class _Output(StrictModel):
    text: str


def _spec(**changes) -> JobTypeSpec:
    base = {"name": "thing", "title": "Thing", "summary": "s", "params": _Params, "output": _Output}
    return JobTypeSpec(**{**base, **changes})


def test_a_module_that_contradicts_itself_is_refused_at_import() -> None:
    _check(_spec(), "thing")
    with pytest.raises(TypeError, match="its name 'other' is not its module's"):
        _check(_spec(name="other"), "thing")
    with pytest.raises(TypeError, match="question field 'question' is not a field"):
        _check(_spec(params=type("P", (_Params,), {"question_field": "question"})), "thing")
    with pytest.raises(TypeError, match="declares artifacts but its output has no `artifacts` field"):
        _check(_spec(artifacts=lambda image, output, params: {}), "thing")
    with pytest.raises(TypeError, match="fan_out must be declared exactly when its params are FanOutParams"):
        _check(_spec(fan_out=True), "thing")
