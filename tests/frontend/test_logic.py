"""The frontend's client-side logic (frontend/logic.py): no Gradio, no HTTP."""

from __future__ import annotations

import pytest

from vlmq.frontend import logic
from vlmq.frontend.logic import InputError, Progress
from vlmq.jobs import REQUESTS

NOW = 1_700_000_000.0


def iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


# --- request fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "top_p", "temperature", "expected"),
    [
        ("greedy", 0.9, 0.7, {"strategy": "greedy"}),
        ("nucleus", 0.9, 0.7, {"strategy": "nucleus", "top_p": 0.9}),
        ("temperature", 0.9, 0.7, {"strategy": "temperature", "temperature": 0.7}),
        ("", None, None, {"strategy": "greedy"}),
    ],
)
def test_decoding_choice_maps_to_the_decoding_object(choice, top_p, temperature, expected) -> None:
    assert logic.decoding_fields(choice, top_p, temperature) == expected
    assert logic.decoding_label(expected) == (
        "greedy" if expected["strategy"] == "greedy"
        else f"{expected['strategy']}({expected.get('top_p', expected.get('temperature'))})"
    )


@pytest.mark.parametrize(("choice", "top_p", "temperature"),
                         [("nucleus", None, 1), ("nucleus", 0, 1), ("temperature", 1, None), ("beam", 1, 1)])
def test_decoding_choice_without_its_value_is_an_input_error(choice, top_p, temperature) -> None:
    with pytest.raises(InputError):
        logic.decoding_fields(choice, top_p, temperature)


def test_caption_fields_make_a_valid_request() -> None:
    fields = logic.caption_fields("blip-large", 3.0, 40.0, "nucleus", 0.8, 0.5, "7", "  a photograph of ")
    assert fields == {
        "model": "blip-large", "num_beams": 3, "max_new_tokens": 40, "early_stopping": True,
        "decoding": {"strategy": "nucleus", "top_p": 0.8}, "seed": 7, "prompt": "a photograph of",
    }
    REQUESTS["caption"].model_validate({"type": "caption", **fields})  # the API's own model accepts it
    plain = logic.caption_fields("blip-base", 1, 30, "greedy", 0.9, 0.7, "", "")
    assert plain == {"model": "blip-base", "num_beams": 1, "max_new_tokens": 30, "decoding": {"strategy": "greedy"}}
    REQUESTS["caption"].model_validate({"type": "caption", **plain})


@pytest.mark.parametrize("seed", [None, "", "  "])
def test_a_blank_seed_sends_none(seed) -> None:
    assert logic.parse_seed(seed) is None


@pytest.mark.parametrize(("seed", "value"), [("7", 7), (7.0, 7), ("0", 0), (4294967295, 4294967295)])
def test_seed_values(seed, value) -> None:
    assert logic.parse_seed(seed) == value


@pytest.mark.parametrize("seed", ["-1", "1.5", "abc", 2**32])
def test_bad_seeds_are_input_errors(seed) -> None:
    with pytest.raises(InputError):
        logic.parse_seed(seed)


def test_choose_image_prefers_the_upload_then_an_http_url() -> None:
    assert logic.choose_image("/tmp/a.png", "https://x/y.jpg") == "/tmp/a.png"
    assert logic.choose_image(None, " https://x/y.jpg ") == "https://x/y.jpg"
    with pytest.raises(InputError, match="http"):
        logic.choose_image(None, "file:///etc/passwd")
    with pytest.raises(InputError, match="upload"):
        logic.choose_image(None, "  ")


def test_a_model_is_required() -> None:
    with pytest.raises(InputError, match="model"):
        logic.vqa_fields(None, "what?", 5)


def test_vqa_fields() -> None:
    fields = logic.vqa_fields("vilt-vqa", "  how many people?  ", 4.0)
    assert fields == {"model": "vilt-vqa", "question": "how many people?", "top_k": 4}
    REQUESTS["vqa"].model_validate({"type": "vqa", **fields})
    with pytest.raises(InputError):
        logic.vqa_fields("vilt-vqa", "   ", 4)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("detect dog ; person", "detect dog ; person"),
        ("dog;person", "detect dog ; person"),
        ("  Detect face;;eye ; ", "detect face ; eye"),
        ("cat", "detect cat"),
    ],
)
def test_detect_prompts_are_normalised(prompt, expected) -> None:
    assert logic.detect_prompt(prompt) == expected
    fields = logic.detect_fields("faces", prompt, 64)
    REQUESTS["detect"].model_validate({"type": "detect", **fields})


@pytest.mark.parametrize("prompt", ["", "detect", "detect ;  ; ", None])
def test_detect_prompt_needs_a_label(prompt) -> None:
    with pytest.raises(InputError):
        logic.detect_prompt(prompt)


def test_chat_messages_from_the_chatbot_history() -> None:
    history = [
        {"role": "user", "content": [{"type": "text", "text": "what is it?"}]},  # Gradio 6's content parts
        {"role": "assistant", "content": "a cat"},
        {"role": "assistant", "content": ""},  # an empty bubble is dropped
    ]
    messages = logic.chat_messages(history, " Be brief. ", " and its colour? ")
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "what is it?"},
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": "and its colour?"},
    ]
    fields = logic.chat_fields("llava-chat", messages, 0.3, 0.7, 64.0, 1.1, "")
    assert fields["max_new_tokens"] == 64 and "seed" not in fields
    REQUESTS["chat"].model_validate({"type": "chat", **fields})
    assert logic.chat_messages([], "", "hi") == [{"role": "user", "content": "hi"}]
    with pytest.raises(InputError):
        logic.chat_messages(history, "", "  ")


def test_chat_history_of_a_job_restores_the_conversation() -> None:
    job = {"input": {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "what is it?"},
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": "colour?"},
    ]}, "output": {"text": "orange"}}
    system, history = logic.chat_history(job)
    assert system == "Be brief."
    assert history == [
        {"role": "user", "content": "what is it?"},
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": "colour?"},
        {"role": "assistant", "content": "orange"},
    ]
    assert logic.chat_history(job, "ora")[1][-1] == {"role": "assistant", "content": "ora"}


def test_compare_fields_per_task() -> None:
    fields = logic.compare_fields(["blip-base", "llava-ft@100", ""], "caption", "", 20)
    assert fields == {"models": ["blip-base", "llava-ft@100"], "task": {"type": "caption", "max_new_tokens": 20}}
    REQUESTS["compare"].model_validate({"type": "compare", **fields})
    vqa = logic.compare_fields(["blip-vqa", "vilt-vqa", None], "vqa", " what? ", 300)
    assert vqa["task"] == {"type": "vqa", "question": "what?", "max_new_tokens": 64}
    REQUESTS["compare"].model_validate({"type": "compare", **vqa})
    detect = logic.compare_fields(["faces", "paligemma", None], "detect", "face", 30)
    assert detect["task"]["prompt"] == "detect face"
    chat = logic.compare_fields(["llava-ft@100", "llava-ft@200", "llava-chat"], "chat", "hi", 30)
    assert chat["models"] == ["llava-ft@100", "llava-ft@200", "llava-chat"]
    REQUESTS["compare"].model_validate({"type": "compare", **chat})


@pytest.mark.parametrize(
    ("models", "task", "prompt"),
    [(["blip-base", "", None], "caption", ""), (["blip-base", "blip-base"], "caption", ""),
     (["a", "b"], "vqa", " "), (["a", "b"], "chat", ""), (["a", "b"], "mystery", "x")],
)
def test_compare_input_errors(models, task, prompt) -> None:
    with pytest.raises(InputError):
        logic.compare_fields(models, task, prompt)


# --- models ------------------------------------------------------------------------------------

MODELS = [
    {"name": "blip-base", "tasks": ["caption"], "workers_online": 1, "ready": True},
    {"name": "paligemma", "tasks": ["detect", "caption", "vqa"], "workers_online": 1, "ready": False},
    {"name": "blip-spare", "tasks": ["caption"], "workers_online": 0, "ready": False},
    {"name": "faces", "tasks": ["detect"], "workers_online": 1, "ready": True},
    {"name": "blip-8bit", "tasks": ["caption"], "workers_online": 0, "ready": False,
     "setup_error": "quantization needs a GPU"},
    {"name": "ft@100", "tasks": ["caption"], "workers_online": 0, "ready": False, "group": "ft"},
]


def test_models_for_a_task_and_their_labels() -> None:
    assert logic.models_for(MODELS, "caption") == ["blip-base", "paligemma", "blip-spare", "blip-8bit", "ft@100"]
    assert logic.models_for(MODELS, "chat") == []
    choices = logic.model_choices(MODELS, "caption")
    assert [value for _, value in choices] == ["blip-base", "paligemma", "blip-spare", "blip-8bit", "ft@100"]
    labels = {value: label for label, value in choices}
    assert labels["blip-base"] == "blip-base"
    assert "loading" in labels["paligemma"]
    assert "no worker" in labels["blip-spare"]
    assert "cannot load" in labels["blip-8bit"]
    assert labels["ft@100"] == "ft@100 (loaded on first use)"  # a group member nobody holds yet


def test_pick_default() -> None:
    names = ["paligemma", "faces"]
    assert logic.pick_default(names, ("faces",)) == "faces"
    assert logic.pick_default(names, ("faces",), current="paligemma") == "paligemma"
    assert logic.pick_default(names, ("nope",), current="gone") == "paligemma"
    assert logic.pick_default([], ("faces",)) is None


# --- status line -------------------------------------------------------------------------------


def test_status_line_while_queued_shows_the_elapsed_seconds() -> None:
    job = {"id": "abcdef0123456789", "type": "caption", "status": "queued", "created_at": iso(NOW - 3.25)}
    progress = logic.progress_of_job(job, NOW)
    assert progress.elapsed_s == pytest.approx(3.25, abs=0.01)
    line = logic.status_line(progress)
    assert line.startswith("◷ <b>queued</b> · 3.2 s") and "job <code>abcdef01</code>" in line
    waiting = logic.status_line(progress.with_(job={**job, "position": 3, "eta_s": 12.0}))
    assert "3 ahead in the queue" in waiting and "starts in about 12 s" in waiting
    first = logic.status_line(progress.with_(job={**job, "position": 0, "eta_s": None}))
    assert "next in the queue" in first and "starts in" not in first


def test_status_line_while_running() -> None:
    progress = Progress("j1", "running", elapsed_s=75, text="a cat on a mat", attempt=2, note="lost the API")
    line = logic.status_line(progress)
    assert "<b>running</b> · 1 min 15 s" in line
    assert "attempt 2" in line and "5 words so far" in line and "lost the API" in line


def test_status_line_when_done_shows_times_and_cache() -> None:
    job = {"id": "j2", "status": "succeeded", "queue_ms": 12.4, "run_ms": 1234.5, "attempts": 1, "cache": "semantic_hit",
           "output": {"text": "hi"}}
    progress = logic.progress_of_job(job, NOW)
    assert progress.final and progress.text == "hi"
    line = logic.status_line(progress)
    assert line.startswith("✔ <b>succeeded</b>")
    assert "queued 12 ms" in line and "ran 1234 ms" in line and "cache semantic hit" in line
    assert "cache" not in logic.status_line(logic.progress_of_job({**job, "cache": "miss"}, NOW))
    assert "cache" not in logic.status_line(logic.progress_of_job({**job, "cache": "off"}, NOW))
    joined = logic.status_line(logic.progress_of_job({**job, "cache": "joined", "cached_from": "abcdef0123"}, NOW))
    assert "cache joined · from job <code>abcdef01</code>" in joined


def test_status_line_shows_the_apis_error() -> None:
    job = {"id": "j3", "status": "failed", "error": {"code": "model_error", "message": "IndexError: <*boom*> & co"}}
    line = logic.status_line(logic.progress_of_job(job, NOW))
    assert "<b>failed</b>" in line and "<b>model_error</b>: IndexError: &lt;*boom*&gt; &amp; co" in line
    submit_error = logic.status_line(logic.error_progress("invalid_request", "fetching http://10.0.0.1/a_b.png: refused"))
    assert submit_error == (  # exactly the API's words: no Markdown to autolink or eat underscores
        '<span class="vlmq-error">✖ <b>invalid_request</b>: fetching http://10.0.0.1/a_b.png: refused</span>')
    canceled = logic.status_line(logic.progress_of_job(
        {"id": "j4", "status": "canceled", "cancel_reason": "canceled by the client"}, NOW))
    assert "<b>canceled</b>" in canceled and "canceled by the client" in canceled


@pytest.mark.parametrize(("seconds", "text"), [(0.04, "0.0 s"), (9.96, "10.0 s"), (12.7, "12 s"), (125, "2 min 05 s"),
                                                (None, "?"), (-3, "0.0 s")])
def test_format_seconds(seconds, text) -> None:
    assert logic.format_seconds(seconds) == text


def test_text_is_escaped_as_html() -> None:
    assert logic.esc('<img src=x onerror="alert(1)"> & *x*\nnext') == (
        "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; *x*<br>next")


# --- outputs -----------------------------------------------------------------------------------


def test_vqa_scores_for_a_label() -> None:
    output = {"answer": "two", "scores": [{"answer": "two", "score": 0.61}, {"answer": "one", "score": 0.2},
                                          {"answer": "two", "score": 0.1}]}
    assert logic.vqa_scores(output) == {"two": 0.61, "one": 0.2}
    assert logic.vqa_scores({"answer": "yes", "scores": None}) is None  # BLIP: no scores
    assert logic.vqa_scores(None) is None


def test_box_rows_and_summary() -> None:
    output = {"boxes": [
        {"label": "face", "x0": 177.26, "y0": 67.0, "x1": 270.0, "y1": 160.04},
        {"label": "eye", "x0": 1, "y0": 2, "x1": 3, "y1": 4, "score": 0.98765},
        {"label": "eye", "x0": 5, "y0": 6, "x1": 7, "y1": 8},
    ], "width": 512, "height": 512}
    assert logic.box_rows(output) == [
        ["face", 177.3, 67.0, 270.0, 160.0, None],
        ["eye", 1.0, 2.0, 3.0, 4.0, 0.988],
        ["eye", 5.0, 6.0, 7.0, 8.0, None],
    ]
    assert logic.boxes_summary(output) == "1 × face, 2 × eye"
    assert logic.box_rows({"boxes": []}) == [] and logic.boxes_summary(None) == "no boxes"


def test_compare_columns_follow_the_chosen_order_with_each_models_error() -> None:
    partials = {
        "faces": {"status": "failed", "job_id": "c1", "error": {"code": "invalid_input", "message": "no cascade for cat"}},
        "paligemma": {"status": "succeeded", "job_id": "c2",
                      "output": {"boxes": [{"label": "cat", "x0": 1, "y0": 2, "x1": 3, "y1": 4}]}},
    }
    cells = logic.compare_columns(["paligemma", "faces", "llava-ft@100"], "detect", partials)
    assert cells[0].startswith("<h3>paligemma</h3>") and "1 × cat" in cells[0]
    assert cells[1].startswith("<h3>faces</h3>") and "<b>failed</b>" in cells[1] and "no cascade for cat" in cells[1]
    assert "queued" in cells[2]  # not in yet
    ended = logic.compare_columns(["paligemma", "faces", "llava-ft@100"], "detect", partials, final=True)
    assert "no result" in ended[2]
    two = logic.compare_columns(["a", "b"], "caption", {"a": {"status": "succeeded", "output": {"text": "x<y"}}})
    assert len(two) == 3 and two[2] == "" and "<p>x&lt;y</p>" in two[0] and "queued" in two[1]


def test_compare_columns_for_vqa_show_scores() -> None:
    partials = {"vilt-vqa": {"status": "succeeded", "output": {"answer": "2", "scores": [{"answer": "2", "score": 0.5}]}}}
    cell = logic.compare_columns(["vilt-vqa", "blip-vqa"], "vqa", partials)[0]
    assert "<b>2</b>" in cell and "<li>2: 0.500</li>" in cell


def test_job_rows() -> None:
    jobs = [
        {"id": "0123456789abcdef", "type": "caption", "status": "succeeded", "model": "blip-base",
         "created_at": "2025-01-02T03:04:05.678+00:00", "queue_ms": 12.6, "run_ms": 250.4, "attempts": 1, "cache": "miss"},
        {"id": "fedcba9876543210", "type": "compare", "status": "running", "model": None,
         "models": ["blip-base", "llava-ft@100"], "created_at": None, "queue_ms": None, "run_ms": None,
         "attempts": 0, "cache": "off"},
    ]
    assert logic.job_rows(jobs) == [
        ["01234567", "caption", "succeeded", "blip-base", "2025-01-02 03:04:05", 13, 250, 1, "miss"],
        ["fedcba98", "compare", "running", "blip-base, llava-ft@100", "", None, None, 0, "off"],
    ]
    assert len(logic.job_rows(jobs)[0]) == len(logic.JOB_HEADERS)
    assert logic.jobs_summary(jobs) == "2 jobs: 1 succeeded, 1 running"
    assert logic.jobs_summary([]) == "no jobs yet"


# --- what the browser keeps --------------------------------------------------------------------


def test_remembered_job_round_trip_and_rejects_junk() -> None:
    kept = logic.remembered("abc123", "0123456789abcdef0123", None)
    assert logic.remembered_job(kept) == ("abc123", "0123456789abcdef0123", None)
    assert logic.remembered_job({}) == (None, None, None)
    assert logic.remembered_job("junk") == (None, None, None)
    hostile = {"job_id": "../../etc", "image": "../../../etc/passwd", "url": "file:///etc/passwd"}
    assert logic.remembered_job(hostile) == (None, None, None)
    assert logic.remembered_job({"job_id": "j", "url": "https://x/y.png"}) == ("j", None, "https://x/y.png")


def test_a_job_id_from_a_caller_is_checked_before_it_goes_into_a_url() -> None:
    assert logic.parse_job_id(" 0123abcd-ef_9 ") == "0123abcd-ef_9"
    for bad in ("", "  ", None, 7, "../../v1/models", "a/b", "a?b=1", "x" * 65):
        with pytest.raises(InputError):
            logic.parse_job_id(bad)
