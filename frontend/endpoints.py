"""The frontend's own API for `gradio_client`: one named endpoint per action.

    from gradio_client import Client, handle_file
    frontend = Client("http://127.0.0.1:7860")
    caption, job = frontend.predict(image=handle_file("cat.jpg"), model="blip-base", api_name="/caption")

`/caption`, `/vqa`, `/detect`, `/chat` and `/compare` (and `/<type>` for every other job type: image,
model, text, params as JSON; out the text and the job) submit one job through `vlmq.client` (the
same API the tabs use), follow it to its end and stream each snapshot (`Client.submit()` yields
them, `predict()` returns the last); `/job` reads (or follows) a job by its id. Every action
returns the job itself as JSON (`id`, `status`, `output`, `error`, times) after its own outputs.

These endpoints have their own input and output components, in a column that is never shown:
the tabs' widgets and handlers (BrowserState, leases, resume, clear, cancel) are private and do
not appear in the API. Model inputs accept any model name (the API refuses an unknown one with
its 422, raised here as a `gr.Error`); the models read from the API when the app was built are
listed in the API docs and give each endpoint its default model.

Errors: a refused submit, an unknown job or an unreachable API raise `gr.Error("<code>: <message>")`
(gradio_client raises `AppError` with that message). A job that runs and fails is not an error
of the call: it returns with `job.status == "failed"` and `job.error`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import gradio as gr

from vlmq.client import Client
from vlmq.frontend import logic
from vlmq.frontend.context import Context
from vlmq.frontend.follow import follow_job
from vlmq.frontend.logic import COMPARE_TASKS, DECODINGS, InputError, Progress
from vlmq.frontend.tabs import caption, chat, detect, vqa
from vlmq.frontend.tabs.common import API_ERRORS, api_error_text, fetch_artifact
from vlmq.jobtypes import JOB_TYPES, JobTypeSpec
from vlmq.views import output_text

log = logging.getLogger("vlmq.frontend")

#: how long building the app waits for the API's model list (a frontend may start before its API)
MODELS_TIMEOUT_S = 3.0

Submit = Callable[[Any], Awaitable[dict[str, Any]]]


def model_input(names: list[str], *, label: str, value: Any = None, multiselect: bool = False) -> gr.Dropdown:
    """A model name (or, `multiselect`, several) given to an endpoint: any name is accepted.

    The API decides which models exist (`allow_custom_value`), so the API docs give the type as
    `str` (not `Literal[...]` of the choices) with the names read from the API at start as
    examples. (An instance override, not a subclass: Gradio writes a .pyi next to the module of
    every Component subclass.)
    """
    dropdown = gr.Dropdown(choices=names, value=value, label=label, multiselect=multiselect,
                           allow_custom_value=True)
    dropdown.api_info = lambda: model_api_info(names, multiselect)  # type: ignore[method-assign]
    return dropdown


def model_api_info(names: list[str], multiselect: bool) -> dict[str, Any]:
    """The JSON schema of a model input: a string (a list of them), the known names as examples."""
    name: dict[str, Any] = {"type": "string"}
    if names:
        name["examples"] = list(names)
    note = "any model the API knows" + (f" (at start: {', '.join(names)})" if names else "")
    if multiselect:
        return {"type": "array", "items": name, "additional_description": f"model names: {note}"}
    return {**name, "additional_description": note}


def read_models(ctx: Context, timeout_s: float = MODELS_TIMEOUT_S) -> list[dict[str, Any]]:
    """The API's model list, or [] when the API does not answer within `timeout_s`."""
    try:
        with Client(ctx.api_url, ctx.api_key, timeout=timeout_s) as client:
            return client.models()
    except API_ERRORS as exc:
        code, message = api_error_text(exc, ctx.api_url)
        log.warning("no model list at start (%s: %s); the API endpoints accept any model name", code, message)
        return []


def api_error(exc: BaseException, api_url: str) -> gr.Error:
    """A failed call to the API as the gr.Error the caller sees: `<code>: <message>`."""
    code, message = api_error_text(exc, api_url)
    return gr.Error(f"{code}: {message}", print_exception=False)


def input_error(exc: Exception) -> gr.Error:
    """A request the frontend can tell is wrong before sending it."""
    return gr.Error(f"invalid_input: {exc}", print_exception=False)


def job_json(progress: Progress) -> dict[str, Any]:
    """The job as last read, with its latest status (events may be ahead of the last read)."""
    return {**(progress.job or {}), "id": progress.job_id, "status": progress.status}


async def follow_snapshots(ctx: Context, *, submit: Submit | None = None, job_id: str | None = None
                           ) -> AsyncIterator[Progress]:
    """Snapshots of a job submitted here (`submit`) or known (`job_id`), until its final one.

    A refused submit, a job that is gone and an unreachable API raise gr.Error.
    """
    async with ctx.client() as client:
        first = None
        if submit is not None:
            try:
                first = await submit(client)
            except API_ERRORS as exc:
                raise api_error(exc, ctx.api_url) from exc
            job_id = first["id"]
        assert job_id is not None
        async for progress in follow_job(client, job_id, first=first):
            if progress.status == "error":
                error = progress.error or {}
                raise gr.Error(f"{error.get('code', 'error')}: {error.get('message', '')}", print_exception=False)
            yield progress


def submitter(job_type: str, image: str, fields: dict[str, Any]) -> Submit:
    def submit(client: Any) -> Awaitable[dict[str, Any]]:
        return client.submit(image, type=job_type, **fields)

    return submit


def checked(make: Callable[[], tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """The image and fields `make()` gives; an input it refuses (InputError, or a None where a
    number belongs) raised as a gr.Error."""
    try:
        return make()
    except (InputError, TypeError, ValueError) as exc:
        raise input_error(exc) from exc


def image_param() -> gr.Image:
    """An endpoint's input image: `handle_file(path_or_url)` in gradio_client."""
    return gr.Image(type="filepath", image_mode=None, label="image")


def image_url_param() -> gr.Textbox:
    return gr.Textbox("", label="image_url", info="an http(s) URL the API fetches, instead of `image`")


def model_param(models: list[dict[str, Any]], task: str, preferred: tuple[str, ...]) -> gr.Dropdown:
    names = logic.models_for(models, task)
    return model_input(names, label="model", value=logic.pick_default(names, preferred))


def job_output() -> gr.JSON:
    return gr.JSON(label="job")


def endpoint(name: str, fn: Callable[..., Any], inputs: list[Any], outputs: list[Any]) -> None:
    """`fn` as the API endpoint `/<name>` (no UI event triggers it), its docstring as its description.

    gradio_client names the parameters after `fn`'s and the outputs after the outputs' labels."""
    gr.on([], fn, inputs=inputs, outputs=outputs, api_name=name, show_progress="hidden", queue=True)


def build(ctx: Context, models: list[dict[str, Any]]) -> None:
    """Adds the endpoints (their components in a column never shown) to the Blocks being built."""
    with gr.Column(visible=False, elem_id="vlmq-api-endpoints"):
        for name, spec in JOB_TYPES.items():
            OWN.get(name, functools.partial(_generic, spec=spec))(ctx, models)
        _job(ctx)


def _caption(ctx: Context, models: list[dict[str, Any]]) -> None:
    async def caption_job(image=None, model=None, prompt="", num_beams=1, max_new_tokens=30, decoding="greedy",
                          top_p=0.9, temperature=0.7, seed=None, image_url=""):
        """Captions an image: yields (caption so far, job) until the job ends."""
        source, fields = checked(lambda: (
            logic.choose_image(image, image_url),
            logic.caption_fields(model, num_beams, max_new_tokens, decoding, top_p, temperature, seed, prompt),
        ))
        async for progress in follow_snapshots(ctx, submit=submitter("caption", source, fields)):
            yield progress.text, job_json(progress)

    inputs = [
        image_param(),
        model_param(models, "caption", caption.PREFERRED),
        gr.Textbox("", label="prompt", info="an optional prefix the caption continues"),
        gr.Number(1, label="num_beams", precision=0),
        gr.Number(30, label="max_new_tokens", precision=0),
        gr.Radio(list(DECODINGS), value="greedy", label="decoding"),
        gr.Number(0.9, label="top_p", info="for decoding='nucleus'"),
        gr.Number(0.7, label="temperature", info="for decoding='temperature'"),
        gr.Number(None, label="seed", precision=0, info="fixes sampled decoding"),
        image_url_param(),
    ]
    endpoint("caption", caption_job, inputs, [gr.Textbox(label="caption"), job_output()])


def _vqa(ctx: Context, models: list[dict[str, Any]]) -> None:
    async def vqa_job(image=None, question="", model=None, top_k=5, image_url=""):
        """Answers a question about an image: yields (answer, job); ViLT's scored answers are in job.output.scores."""
        source, fields = checked(lambda: (logic.choose_image(image, image_url),
                                          logic.vqa_fields(model, question, top_k)))
        async for progress in follow_snapshots(ctx, submit=submitter("vqa", source, fields)):
            output = progress.output if progress.status == "succeeded" else None
            yield (output or {}).get("answer", ""), job_json(progress)

    inputs = [
        image_param(),
        gr.Textbox(label="question"),
        model_param(models, "vqa", vqa.PREFERRED),
        gr.Number(5, label="top_k", precision=0, info="how many scored answers (classifier models)"),
        image_url_param(),
    ]
    endpoint("vqa", vqa_job, inputs, [gr.Textbox(label="answer"), job_output()])


def _detect(ctx: Context, models: list[dict[str, Any]]) -> None:
    async def detect_job(image=None, prompt="detect face ; eye", model=None, max_new_tokens=64, image_url=""):
        """Finds objects: yields (annotated image, boxes, job); the annotated image comes once the job succeeded."""
        source, fields = checked(lambda: (logic.choose_image(image, image_url),
                                          logic.detect_fields(model, prompt, max_new_tokens)))
        async for progress in follow_snapshots(ctx, submit=submitter("detect", source, fields)):
            output = progress.output if progress.status == "succeeded" else None
            annotated = None
            url = ((output or {}).get("artifacts") or {}).get("annotated.png")
            if url and progress.job_id:
                try:
                    annotated = await asyncio.to_thread(fetch_artifact, ctx, progress.job_id, "annotated.png", url)
                except API_ERRORS as exc:
                    code, message = api_error_text(exc, ctx.api_url)
                    log.warning("job %s: no annotated image (%s: %s)", progress.job_id, code, message)
            yield annotated, list((output or {}).get("boxes") or []), job_json(progress)

    inputs = [
        image_param(),
        gr.Textbox("detect face ; eye", label="prompt", info="'detect <label> ; <label> …'"),
        model_param(models, "detect", detect.PREFERRED),
        gr.Number(64, label="max_new_tokens", precision=0),
        image_url_param(),
    ]
    outputs = [gr.Image(label="annotated", type="filepath", format="png"), gr.JSON(label="boxes"), job_output()]
    endpoint("detect", detect_job, inputs, outputs)


def _chat(ctx: Context, models: list[dict[str, Any]]) -> None:
    async def chat_job(image=None, message="", model=None, history=None, system="", temperature=0.3, top_p=0.7,
                       max_new_tokens=128, repetition_penalty=1.0, seed=None, image_url=""):
        """One chat turn about an image: yields (reply so far, history, job). Pass `history` back for the next turn."""
        turns = chat.plain(history if isinstance(history, list) else [])
        source, fields = checked(lambda: (
            logic.choose_image(image, image_url),
            logic.chat_fields(model, logic.chat_messages(turns, system, message), temperature, top_p,
                              max_new_tokens, repetition_penalty, seed),
        ))
        async for progress in follow_snapshots(ctx, submit=submitter("chat", source, fields)):
            reply = progress.text
            if progress.status == "succeeded":
                reply = (progress.output or {}).get("text") or reply
            after = [*turns, {"role": "user", "content": message.strip()}]
            if progress.final and progress.status != "succeeded" and not reply:
                yield reply, turns, job_json(progress)  # a failed turn adds nothing
            else:
                yield reply, [*after, {"role": "assistant", "content": reply}], job_json(progress)

    inputs = [
        image_param(),
        gr.Textbox(label="message"),
        model_param(models, "chat", chat.PREFERRED),
        gr.JSON([], label="history"),  # the turns so far, [{role, content}, …]: what the last call returned
        gr.Textbox("", label="system", info="an optional system message"),
        gr.Number(0.3, label="temperature", info="0: greedy"),
        gr.Number(0.7, label="top_p"),
        gr.Number(128, label="max_new_tokens", precision=0),
        gr.Number(1.0, label="repetition_penalty"),
        gr.Number(None, label="seed", precision=0, info="fixes sampled decoding"),
        image_url_param(),
    ]
    endpoint("chat", chat_job, inputs, [gr.Textbox(label="reply"), gr.JSON(label="history"), job_output()])


def _compare(ctx: Context, known: list[dict[str, Any]]) -> None:
    async def compare_job(image=None, models=(), task="caption", prompt="", max_new_tokens=30, image_url=""):
        """Runs one task with 2+ models on one image: yields (results per model, job) as each model ends."""
        source, fields = checked(lambda: (logic.choose_image(image, image_url),
                                          logic.compare_fields(list(models or []), task, prompt, max_new_tokens)))
        async for progress in follow_snapshots(ctx, submit=submitter("compare", source, fields)):
            yield dict(progress.partials), job_json(progress)

    names = [m["name"] for m in known if set(m.get("tasks") or []) & set(COMPARE_TASKS)]
    inputs = [
        image_param(),
        model_input(names, label="models", multiselect=True),
        gr.Radio(list(COMPARE_TASKS), value="caption", label="task"),
        gr.Textbox("", label="prompt", info="caption: an optional prefix; vqa: the question; detect: the prompt; "
                                            "chat: the message"),
        gr.Number(30, label="max_new_tokens", precision=0),
        image_url_param(),
    ]
    endpoint("compare", compare_job, inputs, [gr.JSON(label="results"), job_output()])


def _generic(ctx: Context, models: list[dict[str, Any]], spec: JobTypeSpec) -> None:
    async def job_of_type(image=None, model=None, text="", params="", image_url=""):
        source, fields = checked(lambda: (logic.choose_image(image, image_url),
                                          logic.job_fields(spec.name, model, text, params)))
        async for progress in follow_snapshots(ctx, submit=submitter(spec.name, source, fields)):
            output = progress.output if progress.status == "succeeded" else None
            yield output_text(output) or progress.text, job_json(progress)

    job_of_type.__doc__ = f"{spec.summary} Yields (text so far, job) until the job ends; job.output is the whole output."
    inputs = [
        image_param(),
        model_param(models, spec.name, ()),
        gr.Textbox("", label="text", info="the job's free text (its question or prompt), if it takes one"),
        gr.Textbox(json.dumps(spec.example), label="params", info="the job's other fields, as a JSON object"),
        image_url_param(),
    ]
    endpoint(spec.name, job_of_type, inputs, [gr.Textbox(label="text"), job_output()])


#: The job types with endpoints of their own; every other type gets `_generic`'s.
OWN: dict[str, Callable[[Context, list[dict[str, Any]]], None]] = {
    "caption": _caption, "vqa": _vqa, "detect": _detect, "chat": _chat, "compare": _compare,
}


def _job(ctx: Context) -> None:
    async def job(job_id="", follow=True):
        """A job by its id: read once, or (`follow`) followed, yielding it until it ends."""
        try:
            known = logic.parse_job_id(job_id)
        except InputError as exc:
            raise input_error(exc) from exc
        async with aclosing(follow_snapshots(ctx, job_id=known)) as snapshots:
            async for progress in snapshots:
                yield job_json(progress)
                if not follow:
                    return

    inputs = [gr.Textbox(label="job_id"), gr.Checkbox(True, label="follow", info="until the job ends")]
    endpoint("job", job, inputs, [job_output()])
