"""Caption: an uploaded image or a URL, a captioning model, beams, length and decoding; streamed text."""

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

TAB = "caption"
PREFERRED = ("blip-base", "blip-large")


def build(ctx: Context, state: gr.BrowserState, models_state: gr.State) -> JobTab:
    with gr.Row():
        with gr.Column(scale=1):
            image = image_input(TAB, 360)
            url = gr.Textbox(label="…or an image URL", placeholder="https://example.com/photo.jpg",
                             elem_id="caption-url")
            example_photos(ctx, ["astronaut", "chelsea", "coffee", "rocket"], [image],
                           "Example photos (scikit-image)")
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

    ui = JobTab(ctx, TAB, state, status, image, url=url)

    decoding.change(
        lambda choice: (gr.update(visible=choice == "nucleus"), gr.update(visible=choice == "temperature")),
        inputs=[decoding], outputs=[top_p, temperature], show_progress="hidden", api_visibility="private",
    )

    def render(progress: Progress) -> dict[Any, Any]:
        return {status: logic.status_line(progress), caption: progress.text}

    async def submit(image_path, image_url, model_name, prompt_text, num_beams, max_new, strategy, p, t, seed_value,
                     request: gr.Request):
        def job() -> tuple[str, dict[str, Any]]:
            return (logic.choose_image(image_path, image_url),
                    logic.caption_fields(model_name, num_beams, max_new, strategy, p, t, seed_value, prompt_text))

        async for update in ui.submit(request, render, "caption", job):
            yield update

    inputs = [image, url, model, prompt, beams, max_tokens, decoding, top_p, temperature, seed]
    ui.on_submit([run.click], submit, inputs=inputs, outputs=[caption])
    ui.on_cancel(cancel)

    def restore(progress: Progress) -> dict[Any, Any]:
        job, params = job_and_input(progress)
        dec = params.get("decoding") or {}
        return {
            model: restored_model(job),
            prompt: params.get("prompt") or "",
            beams: params.get("num_beams", 1),
            max_tokens: params.get("max_new_tokens", 30),
            decoding: dec.get("strategy", "greedy"),
            top_p: gr.update(value=dec.get("top_p") or 0.9, visible=dec.get("strategy") == "nucleus"),
            temperature: gr.update(value=dec.get("temperature") or 0.7,
                                   visible=dec.get("strategy") == "temperature"),
            seed: logic.seed_text(params.get("seed")),
        }

    ui.resume_with(render, restore, [caption, model, prompt, beams, max_tokens, decoding, top_p, temperature, seed])
    ui.picker(model, "caption", PREFERRED)
    return ui
