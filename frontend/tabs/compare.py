"""Compare: one image, one task, 2-3 models or checkpoints side by side (one compare job).

Each column fills as that model's child job ends (SSE `partial` events); a model that fails
shows its own error in its column while the others show their outputs.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from vlmq.frontend import logic
from vlmq.frontend.context import Context
from vlmq.frontend.logic import COMPARE_COLUMNS, InputError, Progress, remembered_job
from vlmq.frontend.tabs.common import (
    TabUI,
    canceller,
    input_error,
    picker_update,
    remember_input,
    run_job,
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


def build(ctx: Context, state: gr.BrowserState, models_state: gr.State) -> TabUI:
    ui = TabUI(TAB)
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(type="filepath", image_mode=None, label="Image", sources=["upload", "clipboard"],
                             elem_id="compare-image", height=320)
            examples = ctx.example_rows(["chelsea", "astronaut", "coffee", "rocket"])
            if examples:
                gr.Examples(examples, inputs=[image], label="Example photos")
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

    def on_task(new_task, models, a, b, c):
        label, placeholder, value = PROMPTS.get(new_task, PROMPTS["caption"])
        return [gr.update(label=label, placeholder=placeholder, value=value),
                *pickers_for(models or [], new_task, [a, b, c])]

    task.input(on_task, inputs=[task, models_state, *pickers], outputs=[prompt, *pickers], show_progress="hidden")

    def render(progress: Progress) -> dict[Any, Any]:
        update: dict[Any, Any] = {status: logic.status_line(progress)}
        job = progress.job or {}
        models = job.get("models") or (job.get("input") or {}).get("models") or []
        job_task = ((job.get("input") or {}).get("task") or {}).get("type", "caption")
        if progress.job_id is None and progress.status != "error":
            cells = [""] * COMPARE_COLUMNS
        elif models:
            cells = logic.compare_columns(models, job_task, progress.partials, final=progress.final)
        else:
            return update
        update.update(dict(zip(columns, cells, strict=True)))
        return update

    async def submit(image_path, task_name, prompt_text, a, b, c, max_new, request: gr.Request):
        try:
            source = logic.choose_image(image_path)
            fields = logic.compare_fields([a, b, c], task_name, prompt_text, max_new)
        except InputError as exc:
            yield input_error(status, exc)
            return
        lease = ctx.lease(request, TAB)
        async for update in run_job(
            ctx, render,
            submit=lambda client: client.submit(source, type="compare", **fields),
            remember=remember_input(ctx, state, source),
            lease=lease,
        ):
            yield update

    run.click(submit, inputs=[image, task, prompt, *pickers, max_tokens], outputs=[status, *columns, state],
              show_progress="hidden", trigger_mode="multiple")
    cancel.click(canceller(ctx), inputs=[state], outputs=None, show_progress="hidden")

    ui.model_outputs = list(pickers)
    ui.on_models = lambda models: dict(zip(pickers, pickers_for(models, "caption"), strict=True))

    def restore(models: list[dict[str, Any]]):
        def on_first(progress: Progress) -> dict[Any, Any]:
            job = progress.job or {}
            spec = (job.get("input") or {}).get("task") or {}
            job_task = spec.get("type", "caption")
            chosen = list(job.get("models") or [])[:COMPARE_COLUMNS]
            chosen += [""] * (COMPARE_COLUMNS - len(chosen))
            updates = pickers_for(models, job_task, chosen)
            for update, name in zip(updates, chosen, strict=True):
                update["value"] = name
            text = spec.get("prompt") or spec.get("question") or ""
            if spec.get("messages"):
                text = logic.message_text(spec["messages"][-1].get("content"))
            label, placeholder, _ = PROMPTS.get(job_task, PROMPTS["caption"])
            return {
                task: job_task,
                prompt: gr.update(label=label, placeholder=placeholder, value=text),
                max_tokens: spec.get("max_new_tokens", 20),
                **dict(zip(pickers, updates, strict=True)),
            }
        return on_first

    async def resume(saved, models, request: gr.Request):
        job_id, _, _ = remembered_job(saved)
        if not job_id:
            yield {status: gr.skip()}
            return
        lease = ctx.lease(request, TAB)
        async for update in run_job(ctx, render, job_id=job_id, forget={state: {}, status: ""}, lease=lease,
                                    on_first=restore(models or [])):
            yield update

    ui.resume = resume
    ui.state, ui.image = state, image
    ui.resume_inputs = [state, models_state]
    ui.resume_outputs = [state, status, *columns, task, prompt, max_tokens, *pickers]
    return ui
