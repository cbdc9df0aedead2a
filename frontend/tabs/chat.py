"""Chat: a multi-turn conversation about one image, the answer streamed token by token.

Each turn is one `chat` job carrying the whole conversation (system message, the turns so far,
the new question); the answer appears as the job's SSE `text` events arrive.
"""

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


def build(ctx: Context, state: gr.BrowserState, models_state: gr.State) -> JobTab:
    with gr.Row():
        with gr.Column(scale=2):
            image = image_input(TAB, 300)
            example_photos(ctx, ["astronaut", "chelsea", "coffee", "rocket"], [image], "Example photos")
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

    ui = JobTab(ctx, TAB, state, status, image)

    def follow_render(progress: Progress) -> dict[Any, Any]:
        """The status line and the conversation so far (a resumed turn, or a turn once accepted)."""
        update: dict[Any, Any] = {status: logic.status_line(progress)}
        shown = conversation(progress)
        if shown is not None:
            update[chatbot] = shown
        return update

    async def submit(image_path, model_name, system_text, temp, p, max_new, rep, seed_value, text, history,
                     request: gr.Request):
        history = plain(history)

        def job() -> tuple[str, dict[str, Any]]:
            source = logic.choose_image(image_path)
            messages = logic.chat_messages(history, system_text, text)
            return source, logic.chat_fields(model_name, messages, temp, p, max_new, rep, seed_value)

        def render(progress: Progress) -> dict[Any, Any]:
            if progress.status == "submitting":
                pending = [*history, {"role": "user", "content": text.strip()},
                           {"role": "assistant", "content": WAITING}]
                return {status: logic.status_line(progress), chatbot: pending, message: ""}
            if progress.status == "error" and progress.job is None:  # not accepted: as it was
                return {status: logic.status_line(progress), chatbot: history, message: text}
            return follow_render(progress)

        async for update in ui.submit(request, render, "chat", job):
            yield update

    inputs = [image, model, system, temperature, top_p, max_tokens, repetition, seed, message, chatbot]
    ui.on_submit([send.click, message.submit], submit, inputs=inputs, outputs=[chatbot, message])
    ui.on_cancel(stop)
    ui.on_clear(clear, {chatbot: [], message: ""})

    def restore(progress: Progress) -> dict[Any, Any]:
        job, params = job_and_input(progress)
        system_text, _ = logic.chat_history(job)
        return {
            model: restored_model(job),
            system: system_text,
            temperature: params.get("temperature", 0.3),
            top_p: params.get("top_p", 0.7),
            max_tokens: params.get("max_new_tokens", 128),
            repetition: params.get("repetition_penalty", 1.0),
            seed: logic.seed_text(params.get("seed")),
        }

    ui.resume_with(follow_render, restore, [chatbot, model, system, temperature, top_p, max_tokens, repetition, seed])
    ui.picker(model, "chat", PREFERRED)
    return ui
