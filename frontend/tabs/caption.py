"""Caption: an uploaded image or a URL, a captioning model, beams, length and decoding; streamed text."""

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

TAB = "caption"
PREFERRED = ("blip-base", "blip-large")


def build(ctx: Context, state: gr.BrowserState) -> TabUI:
    ui = TabUI(TAB)
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(type="filepath", image_mode=None, label="Image", sources=["upload", "clipboard"],
                             elem_id="caption-image", height=360)
            url = gr.Textbox(label="…or an image URL", placeholder="https://example.com/photo.jpg",
                             elem_id="caption-url")
            examples = ctx.example_rows(["astronaut", "chelsea", "coffee", "rocket"])
            if examples:
                gr.Examples(examples, inputs=[image], label="Example photos (scikit-image)")
        with gr.Column(scale=1):
            model = gr.Dropdown(label="Model", choices=[], elem_id="caption-model",
                                info="Models from the API that run `caption`.")
            prompt = gr.Textbox(label="Prompt prefix (optional)", placeholder="a photograph of",
                                elem_id="caption-prompt")
            with gr.Row():
                beams = gr.Slider(1, 8, value=1, step=1, label="Beams", elem_id="caption-beams")
                max_tokens = gr.Slider(1, 256, value=30, step=1, label="Max new tokens",
                                       elem_id="caption-max-tokens")
            decoding = gr.Radio(list(logic.DECODINGS), value="greedy", label="Decoding", elem_id="caption-decoding")
            with gr.Row():
                top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="top_p (nucleus)", visible=False,
                                  elem_id="caption-top-p")
                temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="temperature", visible=False,
                                        elem_id="caption-temperature")
                seed = gr.Textbox(label="Seed (optional: fixes sampled decoding)", placeholder="random",
                                  elem_id="caption-seed")
            with gr.Row():
                run = gr.Button("Caption", variant="primary", elem_id="caption-run")
                cancel = gr.Button("Cancel", variant="stop", elem_id="caption-cancel")
            caption = gr.Textbox(label="Caption", lines=3, interactive=False, elem_id="caption-text",
                                 buttons=["copy"])
            status = status_html(TAB)

    decoding.change(
        lambda choice: (gr.update(visible=choice == "nucleus"), gr.update(visible=choice == "temperature")),
        inputs=[decoding], outputs=[top_p, temperature], show_progress="hidden",
    )

    def render(progress: Progress) -> dict[Any, Any]:
        return {status: logic.status_line(progress), caption: progress.text}

    async def submit(image_path, image_url, model_name, prompt_text, num_beams, max_new, strategy, p, t, seed_value,
                     request: gr.Request):
        try:
            source = logic.choose_image(image_path, image_url)
            fields = logic.caption_fields(model_name, num_beams, max_new, strategy, p, t, seed_value, prompt_text)
        except InputError as exc:
            yield input_error(status, exc)
            return
        lease = ctx.lease(request, TAB)
        async for update in run_job(
            ctx, render,
            submit=lambda client: client.submit(source, type="caption", **fields),
            remember=remember_input(ctx, state, source),
            lease=lease,
        ):
            yield update

    inputs = [image, url, model, prompt, beams, max_tokens, decoding, top_p, temperature, seed]
    outputs = [status, caption, state]
    run.click(submit, inputs=inputs, outputs=outputs, show_progress="hidden", trigger_mode="multiple")
    cancel.click(canceller(ctx), inputs=[state], outputs=None, show_progress="hidden")

    def restore(job_url: str | None):
        def on_first(progress: Progress) -> dict[Any, Any]:
            job = progress.job or {}
            params = job.get("input") or {}
            dec = params.get("decoding") or {}
            restored: dict[Any, Any] = {
                model: gr.update(value=job.get("model")) if job.get("model") else gr.skip(),
                prompt: params.get("prompt") or "",
                beams: params.get("num_beams", 1),
                max_tokens: params.get("max_new_tokens", 30),
                decoding: dec.get("strategy", "greedy"),
                top_p: gr.update(value=dec.get("top_p") or 0.9, visible=dec.get("strategy") == "nucleus"),
                temperature: gr.update(value=dec.get("temperature") or 0.7,
                                       visible=dec.get("strategy") == "temperature"),
                seed: "" if params.get("seed") is None else str(params["seed"]),
                url: job_url or "",
            }
            return restored
        return on_first

    async def resume(saved, request: gr.Request):
        job_id, _, saved_url = remembered_job(saved)
        if not job_id:
            yield {status: gr.skip()}
            return
        lease = ctx.lease(request, TAB)
        async for update in run_job(ctx, render, job_id=job_id, forget={state: {}, status: ""}, lease=lease,
                                    on_first=restore(saved_url)):
            yield update

    ui.picker(model, "caption", PREFERRED)
    ui.resume = resume
    ui.state, ui.image = state, image
    ui.resume_inputs = [state]
    ui.resume_outputs = [state, status, caption, model, prompt, beams, max_tokens, decoding, top_p, temperature, seed,
                         url]
    return ui
