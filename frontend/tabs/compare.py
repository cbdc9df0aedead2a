"""Compare: one image, one task, 2-3 models or checkpoints side by side (one compare job).

Each column fills as that model's child job ends (SSE `partial` events); a model that fails
shows its own error in its column while the others show their outputs.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from vlmq.frontend import logic
from vlmq.frontend.context import Context
from vlmq.frontend.logic import COMPARE_COLUMNS, Progress
from vlmq.frontend.tabs.common import (
    JobTab,
    example_photos,
    image_input,
    job_and_input,
    picker_update,
    status_html,
)

TAB = "compare"
#: per task: the defaults of columns A, B (C starts as none)
PREFERRED = {
    "caption": (("blip-base", "llava-ft@100"), ("blip-large", "llava-ft@200")),
    "vqa": (("blip-vqa",), ("vilt-vqa",)),
    "detect": (("faces",), ("paligemma",)),
    "chat": (("llava-ft@100",), ("llava-ft@200",)),
}
PROMPTS = {
    "caption": ("Prompt prefix (optional)", "a photograph of", ""),
    "vqa": ("Question", "What is in this image?", "what is in the picture?"),
    "detect": ("Detect prompt", "detect face ; eye", "detect face ; eye"),
    "chat": ("Message", "Describe this image.", "Describe this image."),
}
#: the prompt box of a task with no entry above
OTHER_PROMPT = ("Text (if the task takes any)", "", "")


def pickers_for(models: list[dict[str, Any]], task: str, current: list[str | None] | None = None
                ) -> list[dict[str, Any]]:
    """Updates of the three pickers for `task`: A and B get different defaults, C starts as none."""
    current = current or [None] * COMPARE_COLUMNS
    first_pref, second_pref = PREFERRED.get(task, ((), ()))
    first = picker_update(models, task, first_pref, current[0])
    taken = first.get("value")
    names = [name for name in logic.models_for(models, task) if name != taken]
    second = picker_update(models, task, (), None)
    second["value"] = logic.pick_default(names, second_pref, current[1] if current[1] != taken else None)
    third = picker_update(models, task, (), current[2], optional=True)
    return [first, second, third]


def prompt_update(task: str, text: str | None = None) -> dict[str, Any]:
    """The prompt box for `task`: its label and placeholder, `text` in it (or the task's default)."""
    label, placeholder, value = PROMPTS.get(task, OTHER_PROMPT)
    return gr.update(label=label, placeholder=placeholder, value=value if text is None else text)


def build(ctx: Context, state: gr.BrowserState, models_state: gr.State) -> JobTab:
    with gr.Row():
        with gr.Column(scale=1):
            image = image_input(TAB, 320)
            example_photos(ctx, ["chelsea", "astronaut", "coffee", "rocket"], [image], "Example photos")
        with gr.Column(scale=1):
            task = gr.Radio(list(logic.COMPARE_TASKS), value="caption", label="Task", elem_id="compare-task")
            label, placeholder, value = PROMPTS["caption"]
            prompt = gr.Textbox(label=label, placeholder=placeholder, value=value, elem_id="compare-prompt")
            with gr.Row():
                pickers = [
                    gr.Dropdown(label=f"Model {name}", choices=[], elem_id=f"compare-model-{i}")
                    for i, name in enumerate("ABC"[:COMPARE_COLUMNS])
                ]
            max_tokens = gr.Slider(1, 256, value=20, step=1, label="Max new tokens", elem_id="compare-max-tokens")
            with gr.Row():
                run = gr.Button("Compare", variant="primary", elem_id="compare-run")
                cancel = gr.Button("Cancel", variant="stop", elem_id="compare-cancel")
            status = status_html(TAB)
    with gr.Row(equal_height=True):
        columns = []
        for i in range(COMPARE_COLUMNS):
            with gr.Column(min_width=200, variant="panel"):
                columns.append(gr.HTML("", elem_id=f"compare-col-{i}", elem_classes=["vlmq-compare-col"]))

    ui = JobTab(ctx, TAB, state, status, image)

    def on_task(new_task, models, a, b, c):
        return [prompt_update(new_task), *pickers_for(models or [], new_task, [a, b, c])]

    task.input(on_task, inputs=[task, models_state, *pickers], outputs=[prompt, *pickers], show_progress="hidden",
               api_visibility="private")

    def render(progress: Progress) -> dict[Any, Any]:
        update: dict[Any, Any] = {status: logic.status_line(progress)}
        job, params = job_and_input(progress)
        models = job.get("models") or params.get("models") or []
        job_task = (params.get("task") or {}).get("type", "caption")
        if progress.job_id is None and progress.status != "error":
            cells = [""] * COMPARE_COLUMNS
        elif models:
            cells = logic.compare_columns(models, job_task, progress.partials, final=progress.final)
        else:
            return update
        update.update(dict(zip(columns, cells, strict=True)))
        return update

    async def submit(image_path, task_name, prompt_text, a, b, c, max_new, request: gr.Request):
        def job() -> tuple[str, dict[str, Any]]:
            return logic.choose_image(image_path), logic.compare_fields([a, b, c], task_name, prompt_text, max_new)

        async for update in ui.submit(request, render, "compare", job):
            yield update

    ui.on_submit([run.click], submit, inputs=[image, task, prompt, *pickers, max_tokens], outputs=columns)
    ui.on_cancel(cancel)

    ui.model_outputs = list(pickers)
    ui.on_models = lambda models: dict(zip(pickers, pickers_for(models, "caption"), strict=True))

    def restore(models: list[dict[str, Any]]):
        def on_first(progress: Progress) -> dict[Any, Any]:
            job, params = job_and_input(progress)
            spec = params.get("task") or {}
            job_task = spec.get("type", "caption")
            chosen = list(job.get("models") or [])[:COMPARE_COLUMNS]
            chosen += [""] * (COMPARE_COLUMNS - len(chosen))
            updates = pickers_for(models, job_task, chosen)
            for update, name in zip(updates, chosen, strict=True):
                update["value"] = name
            text = spec.get("prompt") or spec.get("question") or ""
            if spec.get("messages"):
                text = logic.message_text(spec["messages"][-1].get("content"))
            return {
                task: job_task,
                prompt: prompt_update(job_task, text),
                max_tokens: spec.get("max_new_tokens", 20),
                **dict(zip(pickers, updates, strict=True)),
            }
        return on_first

    async def resume(saved, models, request: gr.Request):
        async for update in ui.follow_saved(saved, request, render, restore(models or [])):
            yield update

    ui.on_resume(resume, [*columns, task, prompt, max_tokens, *pickers], extra_inputs=(models_state,))
    return ui
