"""Chat: a multi-turn conversation about one image, the answer streamed token by token.

Each turn is one `chat` job carrying the whole conversation (system message, the turns so far,
the new question); the answer appears as the job's SSE `text` events arrive.
"""

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

TAB = "chat"
PREFERRED = ("llava-chat", "llava-ft@200", "llava-ft@100")
WAITING = "…"


def plain(history: list[dict[str, Any]] | None) -> list[dict[str, str]]:
    """The chatbot's value as plain {role, content} messages."""
    return [{"role": m.get("role", "user"), "content": logic.message_text(m.get("content"))}
            for m in history or [] if m.get("role") in ("user", "assistant")]


def conversation(progress: Progress) -> list[dict[str, str]] | None:
    """The chatbot to show for a snapshot of a chat job (None: keep what is shown)."""
    if progress.job is None:
        return None
    if progress.final:
        if progress.status == "succeeded":
            return logic.chat_history(progress.job, (progress.output or {}).get("text") or progress.text)[1]
        _, history = logic.chat_history(progress.job, progress.text)
        return history if progress.text else history[:-1]  # a failed turn leaves no empty answer
    return logic.chat_history(progress.job, progress.text or WAITING)[1]


def build(ctx: Context, state: gr.BrowserState) -> TabUI:
    ui = TabUI(TAB)
    with gr.Row():
        with gr.Column(scale=2):
            image = gr.Image(type="filepath", image_mode=None, label="Image", sources=["upload", "clipboard"],
                             elem_id="chat-image", height=300)
            examples = ctx.example_rows(["astronaut", "chelsea", "coffee", "rocket"])
            if examples:
                gr.Examples(examples, inputs=[image], label="Example photos")
            model = gr.Dropdown(label="Model", choices=[], elem_id="chat-model",
                                info="Models and checkpoints from the API that run `chat`.")
            system = gr.Textbox(label="System message", placeholder="Carefully follow the user's request.",
                                lines=2, elem_id="chat-system")
            with gr.Accordion("Generation settings", open=False):
                temperature = gr.Slider(0.0, 2.0, value=0.3, step=0.05, label="Temperature (0: greedy)",
                                        elem_id="chat-temperature")
                top_p = gr.Slider(0.05, 1.0, value=0.7, step=0.05, label="top_p", elem_id="chat-top-p")
                max_tokens = gr.Slider(1, 2048, value=128, step=1, label="Max new tokens",
                                       elem_id="chat-max-tokens")
                repetition = gr.Slider(1.0, 2.0, value=1.0, step=0.05, label="Repetition penalty",
                                       elem_id="chat-repetition")
                seed = gr.Textbox(label="Seed (optional: fixes sampled decoding)", placeholder="random",
                                  elem_id="chat-seed")
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Conversation", height=440, elem_id="chat-bot", buttons=["copy"])
            message = gr.Textbox(label="Message", placeholder="Ask about the image…", lines=2,
                                 elem_id="chat-message")
            with gr.Row():
                send = gr.Button("Send", variant="primary", elem_id="chat-send")
                stop = gr.Button("Stop", variant="stop", elem_id="chat-stop")
                clear = gr.Button("Clear", elem_id="chat-clear")
            status = status_html(TAB)

    async def submit(image_path, model_name, system_text, temp, p, max_new, rep, seed_value, text, history,
                     request: gr.Request):
        history = plain(history)
        try:
            source = logic.choose_image(image_path)
            messages = logic.chat_messages(history, system_text, text)
            fields = logic.chat_fields(model_name, messages, temp, p, max_new, rep, seed_value)
        except InputError as exc:
            yield input_error(status, exc)
            return
        lease = ctx.lease(request, TAB)
        pending = [*history, {"role": "user", "content": text.strip()}, {"role": "assistant", "content": WAITING}]

        def render(progress: Progress) -> dict[Any, Any]:
            update: dict[Any, Any] = {status: logic.status_line(progress)}
            if progress.status == "submitting":
                update.update({chatbot: pending, message: ""})
            elif progress.status == "error" and progress.job is None:  # not accepted: as it was
                update.update({chatbot: history, message: text})
            else:
                shown = conversation(progress)
                if shown is not None:
                    update[chatbot] = shown
            return update

        async for update in run_job(
            ctx, render,
            submit=lambda client: client.submit(source, type="chat", **fields),
            remember=remember_input(ctx, state, source),
            lease=lease,
        ):
            yield update

    inputs = [image, model, system, temperature, top_p, max_tokens, repetition, seed, message, chatbot]
    outputs = [status, chatbot, message, state]
    gr.on([send.click, message.submit], submit, inputs=inputs, outputs=outputs, show_progress="hidden",
          trigger_mode="multiple")
    stop.click(canceller(ctx), inputs=[state], outputs=None, show_progress="hidden")

    def clear_tab(request: gr.Request):
        ctx.lease(request, TAB).release()  # a turn still followed here stops updating the tab
        return [], "", "", {}

    clear.click(clear_tab, inputs=None, outputs=[chatbot, message, status, state], show_progress="hidden")

    def resume_render(progress: Progress) -> dict[Any, Any]:
        update: dict[Any, Any] = {status: logic.status_line(progress)}
        shown = conversation(progress)
        if shown is not None:
            update[chatbot] = shown
        return update

    def restore():
        def on_first(progress: Progress) -> dict[Any, Any]:
            job = progress.job or {}
            params = job.get("input") or {}
            system_text, _ = logic.chat_history(job)
            return {
                model: gr.update(value=job.get("model")) if job.get("model") else gr.skip(),
                system: system_text,
                temperature: params.get("temperature", 0.3),
                top_p: params.get("top_p", 0.7),
                max_tokens: params.get("max_new_tokens", 128),
                repetition: params.get("repetition_penalty", 1.0),
                seed: "" if params.get("seed") is None else str(params["seed"]),
            }
        return on_first

    async def resume(saved, request: gr.Request):
        job_id, _, _ = remembered_job(saved)
        if not job_id:
            yield {status: gr.skip()}
            return
        lease = ctx.lease(request, TAB)
        async for update in run_job(ctx, resume_render, job_id=job_id, forget={state: {}, status: ""},
                                    lease=lease, on_first=restore()):
            yield update

    ui.picker(model, "chat", PREFERRED)
    ui.resume = resume
    ui.state, ui.image = state, image
    ui.resume_inputs = [state]
    ui.resume_outputs = [state, status, chatbot, model, system, temperature, top_p, max_tokens, repetition, seed]
    return ui
