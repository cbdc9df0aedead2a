"""VQA: a question about an image; BLIP answers in words, ViLT also gives its top answers and scores."""

from __future__ import annotations

from typing import Any

import gradio as gr

from vlmq.frontend import logic
from vlmq.frontend.context import Context
from vlmq.frontend.logic import InputError, Progress, remembered_job
from vlmq.frontend.tabs.common import (
    TabUI,
    canceller,
    input_error,
    remember_input,
    run_job,
    status_html,
)

TAB = "vqa"
PREFERRED = ("vilt-vqa", "blip-vqa")
EXAMPLES = [
    ("astronaut", "what is she holding?"),
    ("chelsea", "what animal is this?"),
    ("coffee", "what is in the cup?"),
    ("rocket", "is it daytime?"),
]


def build(ctx: Context, state: gr.BrowserState) -> TabUI:
    ui = TabUI(TAB)
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(type="filepath", image_mode=None, label="Image", sources=["upload", "clipboard"],
                             elem_id="vqa-image", height=360)
            question = gr.Textbox(label="Question", placeholder="What is in this image?", lines=2,
                                  elem_id="vqa-question")
            with gr.Row():
                model = gr.Dropdown(label="Model", choices=[], elem_id="vqa-model",
                                    info="BLIP answers in words; ViLT (a classifier) also scores its top answers.")
                top_k = gr.Slider(1, 20, value=5, step=1, label="Top answers (ViLT)", elem_id="vqa-top-k")
            with gr.Row():
                ask = gr.Button("Ask", variant="primary", elem_id="vqa-run")
                clear = gr.Button("Clear", elem_id="vqa-clear")
                cancel = gr.Button("Cancel", variant="stop", elem_id="vqa-cancel")
            examples = ctx.example_rows(EXAMPLES)
            if examples:
                gr.Examples(examples, inputs=[image, question], label="Examples")
        with gr.Column(scale=1):
            answer = gr.Textbox(label="Answer", interactive=False, elem_id="vqa-answer")
            scores = gr.Label(label="Top answers and scores (ViLT)", num_top_classes=20, visible=False,
                              elem_id="vqa-scores")
            status = status_html(TAB)

    def render(progress: Progress) -> dict[Any, Any]:
        update: dict[Any, Any] = {status: logic.status_line(progress)}
        if progress.final:
            output = progress.output if progress.status == "succeeded" else None
            update[answer] = (output or {}).get("answer", "")
            found = logic.vqa_scores(output)
            update[scores] = gr.update(value=found, visible=bool(found))
        elif progress.job_id is None:  # a new question: clear the last answer
            update[answer] = ""
            update[scores] = gr.update(value=None, visible=False)
        return update

    async def submit(image_path, question_text, model_name, k, request: gr.Request):
        try:
            source = logic.choose_image(image_path)
            fields = logic.vqa_fields(model_name, question_text, k)
        except InputError as exc:
            yield input_error(status, exc)
            return
        lease = ctx.lease(request, TAB)
        async for update in run_job(
            ctx, render,
            submit=lambda client: client.submit(source, type="vqa", **fields),
            remember=remember_input(ctx, state, source),
            lease=lease,
        ):
            yield update

    outputs = [status, answer, scores, state]
    gr.on([ask.click, question.submit], submit, inputs=[image, question, model, top_k], outputs=outputs,
          show_progress="hidden", trigger_mode="multiple")
    cancel.click(canceller(ctx), inputs=[state], outputs=None, show_progress="hidden")
    def clear_tab(request: gr.Request):
        ctx.lease(request, TAB).release()  # a job still followed here stops updating the tab
        return None, "", "", gr.update(value=None, visible=False), "", {}

    clear.click(clear_tab, inputs=None, outputs=[image, question, answer, scores, status, state],
                show_progress="hidden")

    def restore():
        def on_first(progress: Progress) -> dict[Any, Any]:
            job = progress.job or {}
            params = job.get("input") or {}
            return {
                model: gr.update(value=job.get("model")) if job.get("model") else gr.skip(),
                question: params.get("question") or "",
                top_k: params.get("top_k", 5),
            }
        return on_first

    async def resume(saved, request: gr.Request):
        job_id, _, _ = remembered_job(saved)
        if not job_id:
            yield {status: gr.skip()}
            return
        lease = ctx.lease(request, TAB)
        async for update in run_job(ctx, render, job_id=job_id, forget={state: {}, status: ""}, lease=lease,
                                    on_first=restore()):
            yield update

    ui.picker(model, "vqa", PREFERRED)
    ui.resume = resume
    ui.state, ui.image = state, image
    ui.resume_inputs = [state]
    ui.resume_outputs = [state, status, answer, scores, model, question, top_k]
    return ui
