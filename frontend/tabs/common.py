"""What the job tabs share: the browser-kept last job, the submit-and-follow loop, cancel, resume.

Every job tab has a status line (HTML) and a `gr.BrowserState` holding its last job
(`{"job_id", "image", "url"}` in the browser's localStorage). Its handlers are async generators:

* submit: check the widgets (`frontend/logic.py`), submit through the client, remember the job in
  the browser at once, then yield a UI update for every `Progress` of `follow_job`;
* resume (on page load): the remembered job is read and followed the same way, and the tab's
  inputs are restored from the job (its model, question, prompt, and the kept input image);
* cancel: `POST /v1/jobs/{id}/cancel`; the follower then sees the job end;
* clear (some tabs): the tab's outputs emptied, its kept job forgotten, its follower stopped.

`JobTab` holds that wiring once; a tab module lays out its widgets and gives only what is its own:
how its widgets make a job's fields, how a job shows (`render`), and which inputs a job restores.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import gradio as gr
import httpx

from vlmq.client import ApiError, AsyncClient
from vlmq.frontend import logic
from vlmq.frontend.context import Context, Lease
from vlmq.frontend.follow import follow_job
from vlmq.frontend.logic import (
    InputError,
    Progress,
    error_html,
    error_progress,
    pick_default,
    remembered,
    remembered_job,
)

Render = Callable[[Progress], "dict[Any, Any] | Awaitable[dict[Any, Any]]"]
#: the outputs restored from a resumed job, given its first snapshot that has the job
OnFirst = Callable[[Progress], dict[Any, Any]]

#: BrowserState encrypts with this key. Fixed (not random per process) so that a restarted
#: frontend still reads what browsers kept; what is kept is a job id and an image hash.
BROWSER_SECRET = "vlmq-frontend-browser-state-v1"


def browser_state(tab: str) -> gr.BrowserState:
    return gr.BrowserState({}, storage_key=f"vlmq-{tab}-last-job", secret=BROWSER_SECRET)


def status_html(tab: str) -> gr.HTML:
    """The tab's status line (HTML: API messages show exactly as given)."""
    return gr.HTML("", elem_id=f"{tab}-status", elem_classes=["vlmq-status"])


def image_input(tab: str, height: int) -> gr.Image:
    """The tab's input image (an upload or a pasted image), given to handlers as a file path."""
    return gr.Image(type="filepath", image_mode=None, label="Image", sources=["upload", "clipboard"],
                    elem_id=f"{tab}-image", height=height)


def example_photos(ctx: Context, rows: list[Any], inputs: list[Any], label: str) -> None:
    """gr.Examples of the example photos (rows: names, or tuples of a name and the other inputs)."""
    examples = ctx.example_rows(rows)
    if examples:
        gr.Examples(examples, inputs=inputs, label=label, api_visibility="private")


def job_and_input(progress: Progress) -> tuple[dict[str, Any], dict[str, Any]]:
    """A snapshot's job and the job's input (empty dicts where absent)."""
    job = progress.job or {}
    return job, job.get("input") or {}


def restored_model(job: dict[str, Any]) -> Any:
    """The model dropdown's update for a resumed job: its model, or left as it is."""
    return gr.update(value=job.get("model")) if job.get("model") else gr.skip()


def input_error(status: gr.HTML, exc: InputError) -> dict[Any, Any]:
    gr.Warning(str(exc))
    return {status: error_html("invalid_input", str(exc))}


#: what a call to the API raises when it fails (the API's own error, or no answer)
API_ERRORS = (ApiError, httpx.HTTPError, OSError)


def api_error_text(exc: BaseException, api_url: str) -> tuple[str, str]:
    """(code, message) of a failed call: the API's own, or why the API could not be reached."""
    if isinstance(exc, ApiError):
        return exc.code, exc.message
    return "api_unreachable", f"cannot reach the API at {api_url} ({type(exc).__name__}: {exc})"


def warn_api_error(exc: BaseException, api_url: str) -> tuple[str, str]:
    """A failed call's (code, message), also shown as a warning toast."""
    code, message = api_error_text(exc, api_url)
    gr.Warning(f"{code}: {message}")
    return code, message


async def _rendered(render: Render, progress: Progress) -> dict[Any, Any]:
    update = render(progress)
    if inspect.isawaitable(update):
        update = await update
    return dict(update)


async def run_job(
    ctx: Context,
    render: Render,
    *,
    submit: Callable[[AsyncClient], Awaitable[dict[str, Any]]] | None = None,
    job_id: str | None = None,
    remember: Callable[[dict[str, Any]], dict[Any, Any]] | None = None,
    on_first: Callable[[Progress], dict[Any, Any]] | None = None,
    forget: dict[Any, Any] | None = None,
    lease: Lease | None = None,
) -> AsyncIterator[dict[Any, Any]]:
    """UI updates for one job: submitted here (`submit`) or already known (`job_id`).

    `remember(job)` gives the outputs that record the accepted job (the BrowserState), sent with
    the first update; `on_first(progress)` more outputs for the first snapshot that has the job
    (restored inputs); `forget`: the outputs sent instead when the job is gone (expired).
    With a `lease`, the updates stop (quietly) once another handler took the tab over.
    """
    shown: list[Any] = []  # the components updated so far
    try:
        async with aclosing(_run_job(ctx, render, submit, job_id, remember, on_first, forget, lease)) as updates:
            async for update in updates:
                if lease is not None and not lease.held:
                    break
                shown = list(update) or shown
                yield update
        if lease is not None and not lease.held and shown:
            # Gradio sends a generator's last update again when it ends: make that a no-op, so that
            # it does not overwrite what the handler now owning the tab has shown.
            yield {component: gr.skip() for component in shown}
    finally:
        if lease is not None:
            lease.release()


async def _run_job(
    ctx: Context,
    render: Render,
    submit: Callable[[AsyncClient], Awaitable[dict[str, Any]]] | None,
    job_id: str | None,
    remember: Callable[[dict[str, Any]], dict[Any, Any]] | None,
    on_first: Callable[[Progress], dict[Any, Any]] | None,
    forget: dict[Any, Any] | None,
    lease: Lease | None,
) -> AsyncIterator[dict[Any, Any]]:
    """run_job's updates, before the lease check."""
    async with ctx.client() as client:
        first: dict[str, Any] | None = None
        extra: dict[Any, Any] = {}
        if submit is not None:
            yield await _rendered(render, Progress(job_id=None, status="submitting"))
            try:
                first = await submit(client)
            except API_ERRORS as exc:
                code, message = warn_api_error(exc, ctx.api_url)
                yield await _rendered(render, error_progress(code, message))
                return
            job_id = first["id"]
            if remember is not None:
                extra = remember(first)
        assert job_id is not None
        async for progress in follow_job(client, job_id, first=first):
            if forget is not None and progress.error and progress.error.get("code") == "not_found":
                yield forget
                return
            if lease is not None and not lease.held:
                return  # run_job sees it too, and ends quietly
            update = await _rendered(render, progress)
            if on_first is not None and progress.job is not None:
                update.update(on_first(progress))
                on_first = None
            if extra:
                update.update(extra)
                extra = {}
            yield update
            if progress.status == "failed" and progress.error and submit is not None:  # not again on reload
                gr.Warning(f"{progress.error.get('code')}: {progress.error.get('message')}")


def canceller(ctx: Context) -> Callable[[Any], Awaitable[None]]:
    """The Cancel button's handler: cancels the tab's remembered job."""

    async def cancel(state: Any) -> None:
        await cancel_job(ctx, state)

    return cancel


async def cancel_job(ctx: Context, state: Any) -> None:
    job_id, _, _ = remembered_job(state)
    if not job_id:
        gr.Info("no job to cancel")
        return
    try:
        async with ctx.client() as client:
            job = await client.cancel(job_id)
    except API_ERRORS as exc:
        warn_api_error(exc, ctx.api_url)
        return
    gr.Info(f"job {job_id[:8]}: {job.get('status')}")


def remember_input(ctx: Context, state: gr.BrowserState, image: str | None, url: str | None = None
                   ) -> Callable[[dict[str, Any]], dict[Any, Any]]:
    """A `remember` for run_job: the job id plus the kept copy of its input image (or its URL)."""
    key = ctx.files.keep_input(image) if image and not image.startswith(("http://", "https://")) else None
    url = image if image and image.startswith(("http://", "https://")) else url

    def remember(job: dict[str, Any]) -> dict[Any, Any]:
        return {state: remembered(job["id"], key, url)}

    return remember


def fetch_artifact(ctx: Context, job_id: str, name: str, url: str) -> str:
    """A job's artifact as a local file (fetched once, through the client)."""
    path = ctx.files.artifact_path(job_id, name)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with ctx.sync_client() as client:
            data = client.artifact(url)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return str(path)


def image_restorer(ctx: Context) -> Callable[[Any], Any]:
    """On page load: the input image of the tab's remembered job, from the frontend's kept copy.

    A plain (not generator) handler on purpose: Gradio 6 garbles a file value that a generator
    yields once and then leaves out of its later updates (the Image then holds an
    `{"__type__": "update", "url": ...}` and the next submit fails to preprocess it).
    """

    def restore_image(saved: Any) -> Any:
        _, key, _ = remembered_job(saved)
        path = ctx.files.input_path(key)
        return path if path else gr.skip()

    return restore_image


class TabUI:
    """What app.py wires for a tab: its model pickers, its resume handler, its kept image."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: the outputs `on_models` fills once the API's model list is read (on page load)
        self.model_outputs: list[Any] = []
        self.on_models: Callable[[list[dict[str, Any]]], dict[Any, Any]] = lambda models: {}
        self.resume: Callable[..., AsyncIterator[dict[Any, Any]]] | None = None
        self.resume_inputs: list[Any] = []
        self.resume_outputs: list[Any] = []
        #: the tab's BrowserState and input image: on load the kept image comes back (`restore_image`)
        self.state: gr.BrowserState | None = None
        self.image: gr.Image | None = None

    def picker(self, dropdown: gr.Dropdown, task: str, preferred: tuple[str, ...] = ()) -> None:
        """A model dropdown offering the models that run `task`."""
        previous = self.on_models
        self.model_outputs.append(dropdown)

        def on_models(models: list[dict[str, Any]]) -> dict[Any, Any]:
            return {**previous(models), dropdown: picker_update(models, task, preferred)}

        self.on_models = on_models


class JobTab(TabUI):
    """A tab that runs jobs: its status line, its kept last job, and the handlers all such tabs share.

    `url`: the tab's image URL box, where it has one; a resumed job restores the URL kept with it.
    """

    def __init__(self, ctx: Context, name: str, state: gr.BrowserState, status: gr.HTML, image: gr.Image,
                 url: gr.Textbox | None = None) -> None:
        super().__init__(name)
        self.ctx, self.status, self.url = ctx, status, url
        self.state, self.image = state, image

    async def submit(self, request: gr.Request, render: Render, job_type: str,
                     prepare: Callable[[], tuple[str, dict[str, Any]]]) -> AsyncIterator[dict[Any, Any]]:
        """A submit handler's updates: `prepare()` checks the widgets and gives the image and the
        job's fields (or raises InputError, shown in the status line); the job is then submitted,
        remembered in the browser, and followed while the tab is its own."""
        try:
            source, fields = prepare()
        except InputError as exc:
            yield input_error(self.status, exc)
            return
        lease = self.ctx.lease(request, self.name)
        async for update in run_job(
            self.ctx, render,
            submit=lambda client: client.submit(source, type=job_type, **fields),
            remember=remember_input(self.ctx, self.state, source),
            lease=lease,
        ):
            yield update

    async def follow_saved(self, saved: Any, request: gr.Request, render: Render, on_first: OnFirst
                           ) -> AsyncIterator[dict[Any, Any]]:
        """A resume handler's updates: the job the browser kept (`saved`) followed again, the tab's
        inputs restored from it (`on_first`); a job gone meanwhile is forgotten."""
        job_id, _, saved_url = remembered_job(saved)
        if not job_id:
            yield {self.status: gr.skip()}
            return
        if self.url is not None:
            on_first = self._restoring_url(on_first, saved_url)
        lease = self.ctx.lease(request, self.name)
        async for update in run_job(self.ctx, render, job_id=job_id, forget={self.state: {}, self.status: ""},
                                    lease=lease, on_first=on_first):
            yield update

    def _restoring_url(self, on_first: OnFirst, saved_url: str | None) -> OnFirst:
        """`on_first`, also putting the kept URL back in the URL box."""

        def restore(progress: Progress) -> dict[Any, Any]:
            return {**on_first(progress), self.url: saved_url or ""}

        return restore

    def on_submit(self, triggers: list[Any], submit: Callable[..., AsyncIterator[dict[Any, Any]]],
                  inputs: list[Any], outputs: list[Any]) -> None:
        """`submit` (a handler using `self.submit`) on each trigger, updating `outputs`, the status
        line and the kept job; another click starts another job (the last one started owns the tab)."""
        gr.on(triggers, submit, inputs=inputs, outputs=[self.status, *outputs, self.state], show_progress="hidden",
              trigger_mode="multiple", api_visibility="private")

    def on_resume(self, resume: Callable[..., AsyncIterator[dict[Any, Any]]], outputs: list[Any],
                  extra_inputs: tuple[Any, ...] = ()) -> None:
        """`resume` (a handler using `follow_saved`) runs on page load (app.py wires it), reading
        the kept job (and `extra_inputs`), updating it, the status line and `outputs`."""
        self.resume = resume
        self.resume_inputs = [self.state, *extra_inputs]
        self.resume_outputs = [self.state, self.status, *outputs, *([self.url] if self.url is not None else [])]

    def resume_with(self, render: Render, on_first: OnFirst, outputs: list[Any]) -> None:
        """On page load the kept job is followed again with `render`, `on_first` restoring the inputs."""

        async def resume(saved: Any, request: gr.Request) -> AsyncIterator[dict[Any, Any]]:
            async for update in self.follow_saved(saved, request, render, on_first):
                yield update

        self.on_resume(resume, outputs)

    def on_cancel(self, button: gr.Button) -> None:
        """`button` cancels the tab's kept job."""
        button.click(canceller(self.ctx), inputs=[self.state], outputs=None, show_progress="hidden",
                     api_visibility="private")

    def on_clear(self, button: gr.Button, cleared: dict[Any, Any]) -> None:
        """`button` sets the `cleared` outputs to their values and empties the status line and the
        kept job; a job still followed here stops updating the tab."""

        def clear_tab(request: gr.Request) -> tuple[Any, ...]:
            self.ctx.lease(request, self.name).release()  # a job still followed here stops updating the tab
            return (*copy.deepcopy(list(cleared.values())), "", {})

        button.click(clear_tab, inputs=None, outputs=[*cleared, self.status, self.state], show_progress="hidden",
                     api_visibility="private")


def picker_update(models: list[dict[str, Any]], task: str, preferred: tuple[str, ...] = (),
                  current: str | None = None, optional: bool = False) -> dict[str, Any]:
    """gr.update for a model dropdown: the models running `task`, a sensible value selected."""
    choices = logic.model_choices(models, task)
    names = [name for _, name in choices]
    value = pick_default(names, preferred, current)
    if optional:
        choices = [NONE_CHOICE, *choices]
        value = current if current in names else ""
    return gr.update(choices=choices, value=value)


NONE_CHOICE = ("(none)", "")
