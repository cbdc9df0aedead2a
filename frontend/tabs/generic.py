"""The tab of a job type that has no tab module of its own: any type works in the UI the day its
module lands in vlmq/jobtypes/.

An image, a model (those that run the type), the type's free text where it takes one, and its other
params as a JSON object (the type's example to start from); out come the streamed or final text,
the output as JSON, and the job's artifacts (images the worker made beside the output).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import gradio as gr

from vlmq.frontend import logic
from vlmq.frontend.context import Context
from vlmq.frontend.logic import Progress
from vlmq.frontend.tabs.common import (
    JobTab,
    fetch_artifact,
    image_input,
    job_and_input,
    restored_model,
    status_html,
)
from vlmq.jobtypes import JobTypeSpec
from vlmq.views import output_text


def fetch_artifacts(ctx: Context, job_id: str, urls: dict[str, str]) -> list[tuple[str, str]]:
    """The job's image artifacts as local files with their names (fetched once, through the client)."""
    return [(fetch_artifact(ctx, job_id, name, url), name) for name, url in urls.items()
            if name.lower().endswith((".png", ".jpg", ".jpeg", ".webp"))]


def build(ctx: Context, state: gr.BrowserState, models_state: gr.State, spec: JobTypeSpec) -> JobTab:
    tab = spec.name
    takes_text = bool(spec.params.text_fields("x"))
    with gr.Row():
        with gr.Column(scale=1):
            image = image_input(tab, 360)
            model = gr.Dropdown(label="Model", choices=[], elem_id=f"{tab}-model",
                                info=f"Models from the API that run `{tab}`.")
            text = gr.Textbox(label="Text", lines=2, elem_id=f"{tab}-text", visible=takes_text)
            params = gr.Code(json.dumps(spec.example or {}, indent=1), language="json", label="Parameters (JSON)",
                             elem_id=f"{tab}-params")
            with gr.Row():
                run = gr.Button(spec.title, variant="primary", elem_id=f"{tab}-run")
                cancel = gr.Button("Cancel", variant="stop", elem_id=f"{tab}-cancel")
        with gr.Column(scale=1):
            answer = gr.Textbox(label="Text", lines=4, interactive=False, elem_id=f"{tab}-answer", buttons=["copy"])
            files = gr.Gallery(label="Artifacts", visible=False, elem_id=f"{tab}-artifacts", height=300)
            output = gr.JSON(label="Output", elem_id=f"{tab}-output")
            status = status_html(tab)
    gr.Markdown(spec.summary)

    ui = JobTab(ctx, tab, state, status, image)

    async def render(progress: Progress) -> dict[Any, Any]:
        update: dict[Any, Any] = {status: logic.status_line(progress), answer: progress.text}
        if progress.final:
            result = progress.output if progress.status == "succeeded" else None
            update[answer] = output_text(result) or progress.text
            update[output] = result
            urls = (result or {}).get("artifacts") or {}
            shown: list[tuple[str, str]] = []
            if urls and progress.job_id:
                try:
                    shown = await asyncio.to_thread(fetch_artifacts, ctx, progress.job_id, urls)
                except Exception as exc:  # noqa: BLE001 - the output stands without its pictures
                    update[status] += "<br>" + logic.error_html("artifacts", str(exc))
            update[files] = gr.update(value=shown or None, visible=bool(shown))
        elif progress.job_id is None:  # a new job: clear the last one's output
            update.update({output: None, files: gr.update(value=None, visible=False)})
        return update

    async def submit(image_path, model_name, text_value, params_json, request: gr.Request):
        def job() -> tuple[str, dict[str, Any]]:
            return logic.choose_image(image_path), logic.job_fields(tab, model_name, text_value, params_json)

        async for update in ui.submit(request, render, tab, job):
            yield update

    ui.on_submit([run.click], submit, inputs=[image, model, text, params], outputs=[answer, output, files])
    ui.on_cancel(cancel)

    def restore(progress: Progress) -> dict[Any, Any]:
        job, given = job_and_input(progress)
        question, rest = spec.params.model_validate(given).split_question() if given else (None, {})
        rest = {k: v for k, v in rest.items() if k != "type" and v is not None}
        return {model: restored_model(job), text: question or "", params: json.dumps(rest, indent=1)}

    ui.resume_with(render, restore, [answer, output, files, model, text, params])
    ui.picker(model, tab)
    return ui
