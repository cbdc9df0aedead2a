"""Detect: "detect dog ; person" with PaliGemma, or real faces and eyes with the OpenCV detector.

The annotated image (coloured boxes and labels) is drawn by the worker; this tab fetches it from
the job's `output.artifacts["annotated.png"]` and lists the boxes in a table.
"""

from __future__ import annotations

import asyncio
from typing import Any

import gradio as gr

from vlmq.client import ApiError
from vlmq.frontend import logic
from vlmq.frontend.context import Context
from vlmq.frontend.logic import Progress
from vlmq.frontend.tabs.common import (
    API_ERRORS,
    JobTab,
    example_photos,
    fetch_artifact,
    image_input,
    job_and_input,
    restored_model,
    status_html,
)

TAB = "detect"
PREFERRED = ("faces", "paligemma")
EXAMPLES = [
    ("astronaut", "detect face ; eye"),
    ("chelsea", "detect cat"),
    ("coffee", "detect cup ; spoon"),
    ("rocket", "detect rocket ; cloud"),
]


def build(ctx: Context, state: gr.BrowserState, models_state: gr.State) -> JobTab:
    with gr.Row():
        with gr.Column(scale=1):
            image = image_input(TAB, 360)
            prompt = gr.Textbox(label="Prompt", value="detect face ; eye", elem_id="detect-prompt",
                                info="'detect <label> ; <label> …'. The `faces` detector knows face and eye.")
            with gr.Row():
                model = gr.Dropdown(label="Model", choices=[], elem_id="detect-model")
                max_tokens = gr.Slider(1, 256, value=64, step=1, label="Max new tokens (PaliGemma)",
                                       elem_id="detect-max-tokens")
            with gr.Row():
                run = gr.Button("Detect", variant="primary", elem_id="detect-run")
                clear = gr.Button("Clear", elem_id="detect-clear")
                cancel = gr.Button("Cancel", variant="stop", elem_id="detect-cancel")
            example_photos(ctx, EXAMPLES, [image, prompt], "Examples")
        with gr.Column(scale=1):
            annotated = gr.Image(label="Annotated", interactive=False, elem_id="detect-annotated", height=360,
                                 format="png")
            boxes = gr.Dataframe(headers=logic.BOX_HEADERS, label="Boxes (pixels of the original image)",
                                 interactive=False, elem_id="detect-boxes", wrap=True)
            raw = gr.Textbox(label="Model text (generative detectors)", interactive=False, visible=False,
                             elem_id="detect-raw")
            status = status_html(TAB)

    ui = JobTab(ctx, TAB, state, status, image)

    async def render(progress: Progress) -> dict[Any, Any]:
        update: dict[Any, Any] = {status: logic.status_line(progress)}
        if progress.job_id is None:  # a new run: clear the last result
            update.update({annotated: None, boxes: [], raw: gr.update(value="", visible=False)})
        if not progress.final or progress.status == "error":
            return update
        output = progress.output if progress.status == "succeeded" else None
        update[boxes] = logic.box_rows(output)
        text = (output or {}).get("text")
        update[raw] = gr.update(value=text or "", visible=bool(text))
        update[annotated] = None
        url = ((output or {}).get("artifacts") or {}).get("annotated.png")
        if url and progress.job_id:
            try:
                update[annotated] = await asyncio.to_thread(fetch_artifact, ctx, progress.job_id, "annotated.png", url)
            except API_ERRORS as exc:
                message = exc.message if isinstance(exc, ApiError) else str(exc)
                update[status] += "<br>" + logic.error_html("annotated_image", message)
        return update

    async def submit(image_path, prompt_text, model_name, max_new, request: gr.Request):
        def job() -> tuple[str, dict[str, Any]]:
            return logic.choose_image(image_path), logic.detect_fields(model_name, prompt_text, max_new)

        async for update in ui.submit(request, render, "detect", job):
            yield update

    ui.on_submit([run.click, prompt.submit], submit, inputs=[image, prompt, model, max_tokens],
                 outputs=[annotated, boxes, raw])
    ui.on_cancel(cancel)
    ui.on_clear(clear, {image: None, annotated: None, boxes: [], raw: gr.update(value="", visible=False)})

    def restore(progress: Progress) -> dict[Any, Any]:
        job, params = job_and_input(progress)
        return {
            model: restored_model(job),
            prompt: params.get("prompt") or "",
            max_tokens: params.get("max_new_tokens", 64),
        }

    ui.resume_with(render, restore, [annotated, boxes, raw, model, prompt, max_tokens])
    ui.picker(model, "detect", PREFERRED)
    return ui
