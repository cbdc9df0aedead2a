"""Jobs: the latest jobs from the API (status, model, queue and run time, cache outcome)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from vlmq.frontend import logic
from vlmq.frontend.context import Context
from vlmq.frontend.tabs.common import API_ERRORS, TabUI, warn_api_error

TAB = "jobs"


def build(ctx: Context) -> tuple[TabUI, Any]:
    """The tab, and its refresh handler with its outputs (app.py also runs it on page load)."""
    ui = TabUI(TAB)
    jobs_state = gr.State([])
    with gr.Row():
        refresh = gr.Button("Refresh", variant="primary", elem_id="jobs-refresh", scale=0, min_width=120)
        limit = gr.Slider(5, 200, value=50, step=5, label="How many", elem_id="jobs-limit")
        auto = gr.Checkbox(False, label="Refresh every 5 s", elem_id="jobs-auto")
    summary = gr.HTML("", elem_id="jobs-summary")
    table = gr.Dataframe(headers=logic.JOB_HEADERS, interactive=False, elem_id="jobs-table", wrap=True,
                         max_height=560)
    detail = gr.JSON(label="Selected job (click a row)", visible=False, elem_id="jobs-detail")
    timer = gr.Timer(5.0, active=False)

    async def load(how_many) -> dict[Any, Any]:
        try:
            async with ctx.client() as client:
                jobs = await client.jobs(int(how_many or 50))
        except API_ERRORS as exc:
            code, message = warn_api_error(exc, ctx.api_url)
            return {summary: logic.error_html(code, message)}
        return {summary: logic.esc(logic.jobs_summary(jobs)), table: logic.job_rows(jobs), jobs_state: jobs}

    def select(jobs: list[dict[str, Any]], event: gr.SelectData) -> Any:
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        if isinstance(row, int) and 0 <= row < len(jobs):
            return gr.update(value=jobs[row], visible=True)
        return gr.update(visible=False)

    outputs = [summary, table, jobs_state]
    refresh.click(load, inputs=[limit], outputs=outputs, show_progress="minimal", api_visibility="private")
    timer.tick(load, inputs=[limit], outputs=outputs, show_progress="hidden", api_visibility="private")
    auto.change(lambda on: gr.Timer(active=bool(on)), inputs=[auto], outputs=[timer], show_progress="hidden",
                api_visibility="private")
    table.select(select, inputs=[jobs_state], outputs=[detail], show_progress="hidden", api_visibility="private")
    return ui, (load, [limit], outputs)
