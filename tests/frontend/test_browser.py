"""The frontend end to end, in headless Chromium, against a real stack (API + one worker per model).

The frontend runs as a real subprocess (`python -m vlmq.cli frontend`) pointed at the session
stack; Playwright drives Debian's Chromium (`scripts/install_tools.sh` installs it; Playwright's
own browser download is not used). Each tab's result is saved as <tab>.png under
$VLMQ_SCREENSHOTS_DIR when set (`VLMQ_SCREENSHOTS_DIR=docs/screenshots` refreshes the README's
pictures), otherwise under the system's temporary directory, so a test run never dirties the tree.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import UNSERVED_MODEL
from tests.utils.browser import chromium, require_chromium
from tests.utils.processes import Proc, spawn, start_worker, wait_ready
from tests.utils.slow_model import SLOW_MODEL
from vlmq.cli.redis_server import free_port

VIEWPORT = {"width": 1360, "height": 960}
JOB_TIMEOUT_MS = 60_000
EXAMPLES = {"astronaut", "chelsea", "coffee", "rocket"}
JOB_COLUMNS = ["job", "type", "status", "model", "created", "queue ms", "run ms", "attempts", "cache"]


def test_chromium_is_installed() -> None:
    require_chromium()


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frontend(stack, base_env: dict[str, str], log_dir: Path) -> Iterator[tuple[str, Proc]]:
    """`vlmq frontend` as a real process, pointed at the stack's API."""
    port = free_port()
    env = {**base_env, "VLMQ_API_URL": stack.url, "VLMQ_FRONTEND_PORT": str(port)}
    proc = spawn("frontend", [sys.executable, "-m", "vlmq.cli", "frontend"], env, log_dir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if not proc.alive():
            pytest.fail(f"the frontend exited ({proc.process.returncode}):\n{proc.tail()}")
        try:
            if httpx.get(url + "/", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.stop()
            pytest.fail(f"the frontend did not start in time:\n{proc.tail()}")
        time.sleep(0.3)
    yield url, proc
    proc.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser, frontend):
    url, proc = frontend
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    open_app(page, url)
    yield page
    context.close()
    assert proc.alive(), f"the frontend died:\n{proc.tail()}"
    assert not errors, f"JavaScript errors on the page: {errors}"


# --- helpers -------------------------------------------------------------------------------------


def open_app(page, url: str) -> None:
    page.goto(url)
    wait_models(page)


def wait_models(page) -> None:
    """Until the model list came from the API (the dropdowns are filled)."""
    page.wait_for_function(
        "() => (document.querySelector('#vlmq-api')?.innerText || '').includes('models,')", timeout=30_000
    )


def example(frontend_data: Path, name: str) -> str:
    return str(frontend_data / "examples" / f"{name}.jpg")


@pytest.fixture(scope="module")
def photos(frontend, data_dir: Path) -> dict[str, str]:
    """The example photos the frontend wrote at start (scikit-image's real photos)."""
    folder = data_dir / "frontend" / "examples"
    found = {p.stem: str(p) for p in folder.glob("*.jpg")}
    assert EXAMPLES <= set(found), f"example photos missing in {folder}: {sorted(found)}"
    return found


def open_tab(page, tab: str) -> None:
    page.click(f"#tab-{tab}-button")
    page.wait_for_selector(f"#tab-{tab}", state="visible")


def upload(page, tab: str, path: str) -> None:
    page.set_input_files(f"#{tab}-image input[type=file]", path)
    page.wait_for_selector(f"#{tab}-image img", state="visible")


def choose(page, dropdown: str, model: str) -> None:
    """Pick `model` in a Gradio dropdown (labels may add a note after the name)."""
    page.click(f"#{dropdown} input")
    page.click(f"[role=option][aria-label^='{model}']")
    assert page.input_value(f"#{dropdown} input").startswith(model)


def set_number(page, component: str, value: int) -> None:
    """Type into a slider's number box (retried: a just-opened accordion may still be mounting)."""
    box = f"#{component} input[type=number]"
    for _ in range(10):
        page.fill(box, str(value))
        page.press(box, "Enter")
        page.wait_for_timeout(150)
        if page.input_value(box) == str(value):
            return
    raise AssertionError(f"{component} would not take {value}")


def open_with(page, tab: str, photo: str, model: str | None = None) -> None:
    """Open `tab`, upload `photo` in it (and choose `model` in its model dropdown)."""
    open_tab(page, tab)
    upload(page, tab, photo)
    if model is not None:
        choose(page, f"{tab}-model", model)


def start_caption(page, photo: str, model: str, max_tokens: int | None = None) -> None:
    """Start a job in the Caption tab: `photo` captioned by `model` (at most `max_tokens` new tokens)."""
    upload(page, "caption", photo)
    choose(page, "caption-model", model)
    if max_tokens is not None:
        set_number(page, "caption-max-tokens", max_tokens)
    page.click("#caption-run")


def status_of(page, tab: str) -> str:
    return page.inner_text(f"#{tab}-status")


def wait_status(page, tab: str, pattern: str, timeout_ms: int = JOB_TIMEOUT_MS) -> str:
    """Until the tab's status line matches `pattern` (a regex); fails showing the last status."""
    try:
        page.wait_for_function(
            "([id, pattern]) => new RegExp(pattern).test(document.querySelector('#' + id)?.innerText || '')",
            arg=[f"{tab}-status", pattern],
            timeout=timeout_ms,
        )
    except Exception as exc:
        raise AssertionError(f"{tab} status never matched {pattern!r}; it reads {status_of(page, tab)!r}") from exc
    return status_of(page, tab)


def job_of(status: str) -> str:
    """The short job id a status line names."""
    found = re.search(r"job (\w{8})", status)
    assert found, status
    return found.group(1)


def screenshot(page, tab: str) -> None:
    folder = Path(os.environ.get("VLMQ_SCREENSHOTS_DIR") or tempfile.gettempdir() + "/vlmq-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)  # let the last update paint
    page.screenshot(path=str(folder / f"{tab}.png"), full_page=True)


# --- scenarios -----------------------------------------------------------------------------------


def test_caption_upload_streams_a_caption(page, photos) -> None:
    start_caption(page, photos["chelsea"], "blip-base")
    line = wait_status(page, "caption", "succeeded")
    assert re.search(r"ran \d+ ms", line), line
    caption = page.input_value("#caption-text textarea")
    assert caption.strip(), "no caption text"
    screenshot(page, "caption")

    # A sampled decoding shows its own sliders and sends them.
    page.click("#caption-decoding label:has-text('nucleus')")
    page.wait_for_selector("#caption-top-p", state="visible")
    page.fill("#caption-seed textarea, #caption-seed input", "7")
    page.click("#caption-run")
    wait_status(page, "caption", "succeeded")


def test_caption_text_streams_while_the_job_runs(page, photos) -> None:
    """A slow captioner: its words show up one by one (SSE `text` events) before the job ends."""
    start_caption(page, photos["astronaut"], SLOW_MODEL, 100)
    page.wait_for_function(
        """() => (document.querySelector('#caption-status')?.innerText || '').includes('running')
                 && document.querySelector('#caption-text textarea').value.trim().length > 0""",
        timeout=JOB_TIMEOUT_MS,
    )
    partial = page.input_value("#caption-text textarea")
    line = wait_status(page, "caption", "succeeded")
    final = page.input_value("#caption-text textarea")
    assert len(final) > len(partial) and final.startswith(partial.strip()[:10]), (partial, final)
    assert job_of(line)


def test_cancel_stops_a_running_job(page, photos) -> None:
    start_caption(page, photos["coffee"], SLOW_MODEL, 256)
    page.wait_for_function(
        "() => document.querySelector('#caption-text textarea').value.trim().split(' ').length >= 3",
        timeout=JOB_TIMEOUT_MS,
    )
    page.click("#caption-cancel")
    line = wait_status(page, "caption", "canceled")
    assert "canceled by the client" in line, line
    words = page.input_value("#caption-text textarea").split()
    assert 3 <= len(words) < 256, words  # what it said before it stopped stays


def test_caption_shows_the_apis_own_error(page) -> None:
    page.fill("#caption-url textarea, #caption-url input", "http://127.0.0.1:9/photo.png")
    page.click("#caption-run")
    line = wait_status(page, "caption", "✖")
    # The API refuses a loopback URL (not in VLMQ_URL_ALLOW_HOSTS): its code and message are shown.
    assert "api_unreachable" not in line and "invalid_input" not in line, line
    assert len(line) > 20, line


def test_vqa_vilt_scores_and_blip_answer(page, photos) -> None:
    open_with(page, "vqa", photos["astronaut"], "vilt-vqa")
    page.fill("#vqa-question textarea", "how many people are there?")
    page.click("#vqa-run")
    wait_status(page, "vqa", "succeeded")
    answer = page.input_value("#vqa-answer textarea, #vqa-answer input")
    assert answer.strip()
    scores = page.locator("#vqa-scores")
    scores.wait_for(state="visible")
    text = scores.inner_text()
    assert answer in text, (answer, text)
    assert re.search(r"\d+(\.\d+)?%", text), text  # a score per answer
    screenshot(page, "vqa")

    choose(page, "vqa-model", "blip-vqa")  # generative: an answer, no scores
    page.click("#vqa-run")
    page.wait_for_function("() => !(document.querySelector('#vqa-status')?.innerText || '').includes('vilt')")
    wait_status(page, "vqa", "succeeded")
    page.wait_for_selector("#vqa-scores", state="hidden")

    page.click("#vqa-clear")
    page.wait_for_function("() => document.querySelector('#vqa-question textarea').value === ''")


def test_detect_faces_on_the_astronaut(page, photos) -> None:
    open_with(page, "detect", photos["astronaut"], "faces")
    page.fill("#detect-prompt textarea, #detect-prompt input", "detect face ; eye")
    page.click("#detect-run")
    wait_status(page, "detect", "succeeded")
    annotated = page.locator("#detect-annotated img")
    annotated.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('#detect-annotated img')?.naturalWidth === 512")
    table = page.inner_text("#detect-boxes")
    assert "face" in table, table
    screenshot(page, "detect")

    first = job_of(status_of(page, "detect"))  # again, with PaliGemma: a new annotated image
    choose(page, "detect-model", "paligemma")
    page.fill("#detect-prompt textarea, #detect-prompt input", "person ; flag")
    page.click("#detect-run")
    second = job_of(wait_status(page, "detect", r"succeeded.*job (?!" + first + r")\w{8}"))
    page.wait_for_function(  # the annotated image is the new job's (saved under its id)
        "(job) => (document.querySelector('#detect-annotated img')?.src || '').includes(job)"
        " && document.querySelector('#detect-annotated img').naturalWidth === 512", arg=second)


def test_a_job_type_without_a_tab_module_gets_the_generic_tab(page, photos) -> None:
    """OCR has no tab of its own: the page still offers it, with its models and its params as JSON."""
    open_with(page, "ocr", photos["coffee"], "paligemma")
    assert not page.locator("#ocr-text").is_visible()  # OCR takes no free text
    page.click("#ocr-run")
    line = wait_status(page, "ocr", "succeeded")
    assert "ocr" in page.inner_text("#tab-ocr-button").lower()
    page.wait_for_function("() => (document.querySelector('#ocr-output')?.innerText || '').includes('text')")
    screenshot(page, "ocr")
    assert job_of(line)


def test_segment_in_the_generic_tab_shows_the_masks_image(page, photos) -> None:
    """Segment's tab is the generic one: the prompt as its text, the output JSON, and annotated.png."""
    open_with(page, "segment", photos["chelsea"], "paligemma")
    page.fill("#segment-text textarea", "segment cat ; ear")
    page.click("#segment-run")
    wait_status(page, "segment", "succeeded")
    page.wait_for_function("() => (document.querySelector('#segment-output')?.innerText || '').includes('objects')")
    page.locator("#segment-artifacts img").first.wait_for(state="visible")
    screenshot(page, "segment")


def test_explain_words_are_clickable_and_the_opacity_adjustable(page, photos) -> None:
    """The answer's words are spans; clicking one redraws the heat over the image for that word, and
    the opacity slider redraws it again."""
    open_with(page, "explain", photos["coffee"], "blip-vqa")
    page.fill("#explain-question textarea, #explain-question input", "what is in the cup?")
    page.click("#explain-run")
    wait_status(page, "explain", "succeeded")
    words = page.locator("#explain-words .token-container")
    words.first.wait_for(state="visible")
    assert words.count() >= 2, page.inner_text("#explain-words")
    source = "() => document.querySelector('#explain-heat img')?.src || ''"
    page.wait_for_function(f"() => ({source})().length > 0")
    whole = page.evaluate(source)
    words.nth(1).click()
    page.wait_for_function(f"(before) => ({source})() !== before && ({source})().length > 0", arg=whole)
    one_word = page.evaluate(source)
    word = words.nth(1).inner_text().strip()
    page.wait_for_function("(w) => document.querySelector('#explain-heat').innerText.includes(w)", arg=word)
    screenshot(page, "explain")
    slider = page.locator("#explain-opacity input[type=range]")
    slider.fill("0.1")
    slider.dispatch_event("pointerup")
    slider.dispatch_event("mouseup")
    page.wait_for_function(f"(before) => ({source})() !== before", arg=one_word)


def test_compare_models_side_by_side(page, photos) -> None:
    open_with(page, "compare", photos["coffee"])
    page.click("#compare-task label:has-text('caption')")
    choose(page, "compare-model-0", "blip-base")
    choose(page, "compare-model-1", "llava-ft@100")
    choose(page, "compare-model-2", "llava-ft@200")
    page.click("#compare-run")
    wait_status(page, "compare", "succeeded")
    for column, model in enumerate(["blip-base", "llava-ft@100", "llava-ft@200"]):
        text = page.inner_text(f"#compare-col-{column}")
        assert text.startswith(model) and len(text.strip().splitlines()) > 1, (model, text)
    screenshot(page, "compare")


def test_compare_shows_each_models_own_error(page, photos) -> None:
    """The face detector knows no cats: its column shows its error, PaliGemma's its boxes."""
    open_with(page, "compare", photos["chelsea"])
    page.click("#compare-task label:has-text('detect')")
    page.wait_for_function(  # the task's own prompt is in (choosing a task fills it in)
        "() => document.querySelector('#compare-prompt').innerText.includes('Detect prompt')")
    page.fill("#compare-prompt textarea, #compare-prompt input", "detect cat")
    choose(page, "compare-model-0", "faces")
    choose(page, "compare-model-1", "paligemma")
    page.click("#compare-run")
    wait_status(page, "compare", "succeeded")
    faces, paligemma = page.inner_text("#compare-col-0"), page.inner_text("#compare-col-1")
    assert "failed" in faces and "cat" in faces, faces
    assert "failed" not in paligemma and len(paligemma.strip().splitlines()) > 1, paligemma
    assert page.inner_text("#compare-col-2").strip() == ""


def test_chat_two_turns_streamed(page, photos) -> None:
    open_with(page, "chat", photos["astronaut"], "llava-chat")
    page.fill("#chat-system textarea", "Answer briefly.")
    page.click("text=Generation settings")
    set_number(page, "chat-max-tokens", 24)
    page.fill("#chat-message textarea", "What is in the picture?")
    page.click("#chat-send")
    first = job_of(wait_status(page, "chat", "succeeded"))
    page.fill("#chat-message textarea", "And what colour is it?")
    page.click("#chat-send")
    page.wait_for_function("() => document.querySelector('#chat-bot').innerText.includes('And what colour is it?')")
    second = job_of(wait_status(page, "chat", r"succeeded.*job (?!" + first + r")\w{8}"))
    assert second != first
    bot = page.inner_text("#chat-bot")
    assert bot.index("What is in the picture?") < bot.index("And what colour is it?"), bot
    assert page.input_value("#chat-message textarea") == ""  # sent: the box is cleared
    screenshot(page, "chat")


def test_reload_mid_job_still_shows_the_result(page, frontend, photos, stack, base_env, log_dir) -> None:
    """A job waits for a worker (its model has none); the page reloads; a worker starts; the result shows."""
    start_caption(page, photos["rocket"], UNSERVED_MODEL, 12)
    line = wait_status(page, "caption", r"queued · \d")
    job = job_of(line)

    page.reload()
    wait_models(page)
    line = wait_status(page, "caption", f"queued.*{job}", timeout_ms=20_000)  # followed again
    page.wait_for_function(  # the elapsed seconds keep counting while it waits
        "([id, before]) => document.querySelector('#' + id).innerText !== before", arg=["caption-status", line]
    )
    page.wait_for_selector("#caption-image img", state="visible")  # the input image is back
    assert page.input_value("#caption-model input").startswith(UNSERVED_MODEL)
    assert page.input_value("#caption-max-tokens input[type=number]") == "12"
    screenshot(page, "resume")

    worker = start_worker(UNSERVED_MODEL, base_env, log_dir)
    try:
        wait_ready(stack.redis_url, [worker], [UNSERVED_MODEL])
        wait_status(page, "caption", f"succeeded.*{job}")
        assert page.input_value("#caption-text textarea").strip()
        page.click("#caption-run")  # the restored inputs (image included) make a valid request again
        wait_status(page, "caption", r"succeeded.*job (?!" + job + r")\w{8}")
    finally:
        worker.stop()


def test_a_new_job_stops_following_the_resumed_one(page, photos, stack) -> None:
    """After a reload the remembered job is followed; submitting another one takes the tab over."""
    start_caption(page, photos["coffee"], UNSERVED_MODEL, 9)
    waiting = job_of(wait_status(page, "caption", r"queued · \d"))
    try:
        page.reload()
        wait_models(page)
        wait_status(page, "caption", f"queued.*{waiting}", timeout_ms=20_000)
        choose(page, "caption-model", "blip-base")
        page.click("#caption-run")
        line = wait_status(page, "caption", r"succeeded.*job (?!" + waiting + r")\w{8}")
        page.wait_for_timeout(2500)  # the resumed follower would tick "queued · N s" over it every second
        assert status_of(page, "caption") == line
    finally:
        with stack.client() as api:  # leave no job queued for a model without a worker
            for job in api.get("/v1/jobs", params={"limit": 200}).json()["jobs"]:
                if job["id"].startswith(waiting):
                    api.post(f"/v1/jobs/{job['id']}/cancel")


def test_jobs_tab_lists_recent_jobs(page, photos) -> None:
    start_caption(page, photos["chelsea"], "blip-large")
    job = job_of(wait_status(page, "caption", "succeeded"))
    open_tab(page, "jobs")
    page.click("#jobs-refresh")
    page.wait_for_function("(job) => document.querySelector('#jobs-table').innerText.includes(job)", arg=job)
    page.wait_for_function("() => /\\d+ jobs?:/.test(document.querySelector('#jobs-summary').innerText)")
    cells = [c.strip() for c in page.inner_text("#jobs-table").splitlines() if c.strip()]
    mine = cells[cells.index(job):][: len(JOB_COLUMNS)]  # the job's row: one cell a line
    assert dict(zip(JOB_COLUMNS, mine, strict=True)) | {"created": "", "queue ms": "", "run ms": ""} == {
        "job": job, "type": "caption", "status": "succeeded", "model": "blip-large", "created": "",
        "queue ms": "", "run ms": "", "attempts": "1", "cache": "miss",
    }, mine
    screenshot(page, "jobs")
    page.locator("#jobs-table").get_by_text(job, exact=True).filter(visible=True).first.click()  # in full
    page.wait_for_function("(job) => document.querySelector('#jobs-detail')?.innerText.includes(job)", arg=job)
