"""VQA: a question about an image; BLIP answers in words, ViLT also gives its top answers and scores."""

from __future__ import annotations

from typing import Any

import gradio as gr

from vlmq.frontend import logic
from vlmq.frontend.context import Context
from vlmq.frontend.logic import Progress
from vlmq.frontend.tabs.common import (
    JobTab,
    example_photos,
    image_input,
    job_and_input,
    restored_model,
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


def build(ctx: Context, state: gr.BrowserState, models_state: gr.State) -> JobTab:
    with gr.Row():
        with gr.Column(scale=1):
            image = image_input(TAB, 360)
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
            example_photos(ctx, EXAMPLES, [image, question], "Examples")
        with gr.Column(scale=1):
            answer = gr.Textbox(label="Answer", interactive=False, elem_id="vqa-answer")
            scores = gr.Label(label="Top answers and scores (ViLT)", num_top_classes=20, visible=False,
                              elem_id="vqa-scores")
            status = status_html(TAB)

    ui = JobTab(ctx, TAB, state, status, image)

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
        def job() -> tuple[str, dict[str, Any]]:
            return logic.choose_image(image_path), logic.vqa_fields(model_name, question_text, k)

        async for update in ui.submit(request, render, "vqa", job):
            yield update

    ui.on_submit([ask.click, question.submit], submit, inputs=[image, question, model, top_k],
                 outputs=[answer, scores])
    ui.on_cancel(cancel)
    ui.on_clear(clear, {image: None, question: "", answer: "", scores: gr.update(value=None, visible=False)})

    def restore(progress: Progress) -> dict[Any, Any]:
        job, params = job_and_input(progress)
        return {
            model: restored_model(job),
            question: params.get("question") or "",
            top_k: params.get("top_k", 5),
        }

    ui.resume_with(render, restore, [answer, scores, model, question, top_k])
    ui.picker(model, "vqa", PREFERRED)
    return ui
