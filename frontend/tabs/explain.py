"""Explain: where the model looked. The answer's words are clickable; the chosen word's heat (or,
before any click, the whole answer's) is laid over the image, with its opacity on a slider.

The overlay is drawn here from the job's output (each token's heat grid) and the image this tab
sent, with its EXIF orientation applied as the workers apply it: the frontend stays an HTTP
client of the API, and a click or a slider move costs no request.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageOps

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
from vlmq.jobtypes.explain import OVERLAY_OPACITY, blend, decode_heat

TAB = "explain"
PREFERRED = ("blip-vqa", "blip-base")
EXAMPLES = [("coffee", "what is in the cup?"), ("chelsea", "")]


def explain_fields(model: str | None, question: str | None, max_new_tokens: float) -> dict[str, Any]:
    fields: dict[str, Any] = {"model": logic.require_model(model), "max_new_tokens": int(max_new_tokens)}
    if (question or "").strip():
        fields["question"] = question.strip()
    return fields


#: A word's colour, and the chosen word's.
WORD, CHOSEN = "#fde68a", "#fb923c"


def words_of(output: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The answer's tokens as HighlightedText spans, each labelled with its index."""
    return [(token["text"], str(i)) for i, token in enumerate((output or {}).get("tokens") or [])]


def colours(output: dict[str, Any] | None, chosen: int | None) -> dict[str, str]:
    """Every word in one colour, the chosen one in another."""
    return {str(i): CHOSEN if i == chosen else WORD for i in range(len((output or {}).get("tokens") or []))}


def heat_label(output: dict[str, Any] | None, chosen: int | None) -> str:
    tokens = (output or {}).get("tokens") or []
    if chosen is not None and 0 <= chosen < len(tokens):
        return f"Where the model looked for “{tokens[chosen]['text']}”"
    return "Where the model looked (the whole answer)"


def heat_image(image_path: str | None, output: dict[str, Any] | None, token: int | None, opacity: float
               ) -> Image.Image | None:
    """The image with token `token`'s heat (None: the mean of all tokens') over it."""
    tokens = (output or {}).get("tokens") or []
    if not image_path or not tokens:
        return None
    grid = output["grid"]
    heats = [decode_heat(t["heat"], grid) for t in tokens]
    heat = heats[token] if token is not None and 0 <= token < len(heats) else np.mean(heats, axis=0)
    with Image.open(image_path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    return blend(image, heat, float(opacity))


def build(ctx: Context, state: gr.BrowserState, models_state: gr.State) -> JobTab:
    with gr.Row():
        with gr.Column(scale=1):
            image = image_input(TAB, 360)
            question = gr.Textbox(label="Question", elem_id="explain-question",
                                  info="For a VQA model (blip-vqa); leave empty for a captioning model (blip-base).")
            with gr.Row():
                model = gr.Dropdown(label="Model", choices=[], elem_id="explain-model")
                max_tokens = gr.Slider(1, 64, value=12, step=1, label="Max new tokens", elem_id="explain-max-tokens")
            with gr.Row():
                run = gr.Button("Explain", variant="primary", elem_id="explain-run")
                cancel = gr.Button("Cancel", variant="stop", elem_id="explain-cancel")
            example_photos(ctx, EXAMPLES, [image, question], "Examples")
        with gr.Column(scale=1):
            words = gr.HighlightedText(label="The answer: click a word to see where the model looked for it",
                                       elem_id="explain-words", combine_adjacent=False, show_legend=False,
                                       show_inline_category=False, interactive=False)
            heat = gr.Image(label="Where the model looked", interactive=False, elem_id="explain-heat", height=360,
                            format="png")
            opacity = gr.Slider(0, 1, value=OVERLAY_OPACITY, step=0.05, label="Opacity", elem_id="explain-opacity")
            status = status_html(TAB)
    output = gr.State(None)  # the finished job's output
    chosen = gr.State(None)  # the clicked token's index; None: the whole answer

    ui = JobTab(ctx, TAB, state, status, image)

    async def render(progress: Progress) -> dict[Any, Any]:
        update: dict[Any, Any] = {status: logic.status_line(progress)}
        if progress.job_id is None:
            update.update({words: [], heat: None, output: None, chosen: None})
        if progress.final and progress.status == "succeeded":
            update.update({words: gr.update(value=words_of(progress.output), color_map=colours(progress.output, None)),
                           output: progress.output, chosen: None})
        return update

    async def submit(image_path, question_text, model_name, max_new, request: gr.Request):
        def job() -> tuple[str, dict[str, Any]]:
            return logic.choose_image(image_path), explain_fields(model_name, question_text, max_new)

        async for update in ui.submit(request, render, TAB, job):
            yield update

    def redraw(image_path, shown, token, alpha):
        return gr.update(value=heat_image(image_path, shown, token, alpha), label=heat_label(shown, token))

    def pick(image_path, shown, alpha, event: gr.SelectData):
        token = event.index if isinstance(event.index, int) else None
        return token, redraw(image_path, shown, token, alpha), gr.update(color_map=colours(shown, token))

    ui.on_submit([run.click], submit, inputs=[image, question, model, max_tokens], outputs=[words, heat, output, chosen])
    output.change(redraw, inputs=[image, output, chosen, opacity], outputs=heat, show_progress="hidden",
                  api_visibility="private")
    words.select(pick, inputs=[image, output, opacity], outputs=[chosen, heat, words], show_progress="hidden",
                 api_visibility="private")
    opacity.release(redraw, inputs=[image, output, chosen, opacity], outputs=heat, show_progress="hidden",
                    api_visibility="private")
    ui.on_cancel(cancel)

    def restore(progress: Progress) -> dict[Any, Any]:
        job, params = job_and_input(progress)
        return {model: restored_model(job), question: params.get("question") or "",
                max_tokens: params.get("max_new_tokens", 12)}

    ui.resume_with(render, restore, [words, heat, output, chosen, model, question, max_tokens])
    ui.picker(model, TAB, PREFERRED)
    return ui
