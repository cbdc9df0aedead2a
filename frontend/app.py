"""The vlmq web frontend: every demo as a Gradio tab, a pure HTTP client of the API.

    vlmq frontend            # http://$VLMQ_FRONTEND_HOST:$VLMQ_FRONTEND_PORT, API at $VLMQ_API_URL

Tabs: one per job type, in their order (frontend/tabs/: a type's own tab module, else the generic
tab), then Jobs. Nothing here loads a model: every job goes
through `vlmq.client` to the API (VLMQ_API_URL, VLMQ_API_KEY), so the frontend runs on a machine
without a GPU and does not notice a worker restarting.

On page load the app reads the API's model list (dropdowns offer the models that run each task),
then follows again the last job of each tab, which the browser kept in its localStorage
(gr.BrowserState): a reload, a lost connection or a restarted frontend does not lose a job.

For scripts (`gradio_client`), `frontend/endpoints.py` adds one named endpoint per action
(/caption, /vqa, /detect, /chat, /compare, /job, and /<type> for each other job type); the page's own
handlers are private.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from vlmq.frontend import endpoints, logic
from vlmq.frontend.context import Context
from vlmq.frontend.tabs import builder, jobs
from vlmq.frontend.tabs.common import API_ERRORS, TabUI, browser_state, image_restorer, warn_api_error
from vlmq.jobtypes import JOB_TYPES
from vlmq.settings import Settings, get_settings

log = logging.getLogger("vlmq.frontend")

CSS = """
.vlmq-status { min-height: 1.5em; }
.vlmq-compare-col { min-height: 6em; }
.vlmq-compare-col h3 { margin: 0 0 .4em 0; }
.vlmq-error { color: var(--error-text-color, #b91c1c); }
footer { display: none !important; }
"""


def theme() -> gr.themes.Base:
    """The default look, with local fonts only (the frontend may run with no internet)."""
    return gr.themes.Soft(
        font=[gr.themes.Font("ui-sans-serif"), gr.themes.Font("system-ui"), "sans-serif"],
        font_mono=[gr.themes.Font("ui-monospace"), gr.themes.Font("DejaVu Sans Mono"), "monospace"],
    )


def api_summary(url: str, models: list[dict[str, Any]]) -> str:
    """The header line (HTML): where the API is, its models, which of them have no worker."""
    with_workers = sum(1 for m in models if m.get("workers_online"))
    waiting = [m["name"] for m in models if not m.get("workers_online")]
    line = f"API <code>{logic.esc(url)}</code> · {len(models)} models, {with_workers} with a worker"
    if waiting:
        line += f" · no worker yet: {logic.esc(', '.join(waiting))} (their jobs wait for one)"
    return line


def build_app(settings: Settings | None = None, ctx: Context | None = None) -> gr.Blocks:
    """The whole frontend as one gr.Blocks (not launched)."""
    settings = settings or get_settings()
    ctx = ctx or Context.from_settings(settings)
    uis: list[TabUI] = []
    with gr.Blocks(title="vlmq", analytics_enabled=False) as demo:
        gr.Markdown("# vlmq · vision-language jobs", elem_id="vlmq-title")
        api_line = gr.HTML(f"API <code>{logic.esc(ctx.api_url)}</code> · reading the model list…",
                           elem_id="vlmq-api")
        models_state = gr.State([])
        # The browser-kept last job of each tab. Outside the tabs on purpose: a tab renders only
        # once opened, and a BrowserState reads localStorage when it renders.
        kept = {name: browser_state(name) for name in JOB_TYPES}
        with gr.Tabs(elem_id="vlmq-tabs"):
            for name, spec in JOB_TYPES.items():
                with gr.Tab(spec.title, id=name, elem_id=f"tab-{name}"):
                    uis.append(builder(spec)(ctx, kept[name], models_state))
            with gr.Tab("Jobs", id="jobs", elem_id="tab-jobs") as jobs_tab:
                _, (load_jobs, jobs_inputs, jobs_outputs) = jobs.build(ctx)

        model_outputs = [component for ui in uis for component in ui.model_outputs]

        async def load_models() -> dict[Any, Any]:
            try:
                async with ctx.client() as client:
                    models = await client.models()
            except API_ERRORS as exc:
                code, message = warn_api_error(exc, ctx.api_url)
                return {api_line: logic.error_html(code, message) + " · reload the page once the API runs"}
            update: dict[Any, Any] = {api_line: api_summary(ctx.api_url, models), models_state: models}
            for ui in uis:
                update.update(ui.on_models(models))
            return update

        # The page's own handlers are private: the API that gradio_client sees is frontend/endpoints.py's.
        loaded = demo.load(load_models, outputs=[api_line, models_state, *model_outputs], show_progress="hidden",
                           api_visibility="private")
        for ui in uis:
            if ui.state is not None and ui.image is not None:
                demo.load(image_restorer(ctx), inputs=[ui.state], outputs=[ui.image], show_progress="hidden",
                          api_visibility="private")
            if ui.resume is None:
                continue
            # Follows the tab's remembered job; a job started in the tab meanwhile takes over (Leases).
            loaded.then(ui.resume, inputs=ui.resume_inputs, outputs=ui.resume_outputs, show_progress="hidden",
                        api_visibility="private")
        demo.load(load_jobs, inputs=jobs_inputs, outputs=jobs_outputs, show_progress="hidden",
                  api_visibility="private")
        jobs_tab.select(load_jobs, inputs=jobs_inputs, outputs=jobs_outputs, show_progress="hidden",
                        api_visibility="private")
        endpoints.build(ctx, endpoints.read_models(ctx))
    demo.vlmq_context = ctx  # type: ignore[attr-defined]
    return demo


def launch(settings: Settings | None = None, *, block: bool = True) -> gr.Blocks:
    """Serve the frontend on settings.frontend_host:frontend_port (127.0.0.1:7860 by default)."""
    settings = settings or get_settings()
    ctx = Context.from_settings(settings)
    demo = build_app(settings, ctx)
    demo.queue(default_concurrency_limit=None)
    log.info("frontend on http://%s:%s, API at %s", settings.frontend_host, settings.frontend_port, ctx.api_url)
    demo.launch(
        server_name=settings.frontend_host,
        server_port=settings.frontend_port,
        allowed_paths=[str(ctx.files.root)],
        show_error=True,
        quiet=False,
        ssr_mode=False,
        prevent_thread_lock=not block,
        theme=theme(),
        css=CSS,
        footer_links=[],
    )
    return demo
