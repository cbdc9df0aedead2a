"""The frontend's client-side logic, free of Gradio: widget values in, API fields and display values out.

Everything here is pure (no HTTP, no Gradio), so it is unit-tested on its own
(tests/frontend/test_logic.py). `frontend/app.py` and `frontend/tabs/*` only wire these functions
to widgets, and `frontend/follow.py` turns a job's events into `Progress` snapshots.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from vlmq.jobs import JobStatus
from vlmq.jobtypes import JOB_TYPES, MODEL_TYPES, JobType

FINAL = frozenset(s.value for s in JobStatus if s.final)
DECODINGS = ("greedy", "nucleus", "temperature")
COMPARE_TASKS = MODEL_TYPES
#: What a required free-text field is called in a message to the user.
TEXT_NAMES = {"messages": "message"}
COMPARE_COLUMNS = 3
CACHE_ANSWERS = frozenset({"hit", "semantic_hit", "joined"})
BOX_HEADERS = ["label", "x0", "y0", "x1", "y1", "score"]
JOB_HEADERS = ["job", "type", "status", "model", "created", "queue ms", "run ms", "attempts", "cache"]
_DETECT_PREFIX = re.compile(r"^\s*detect\b", re.IGNORECASE)

#: Plain symbols (DejaVu has them), not emoji: they render on machines without an emoji font.
STATUS_ICONS = {
    "submitting": "↑",
    "queued": "◷",
    "running": "⚙",
    "succeeded": "✔",
    "failed": "✖",
    "canceled": "⊘",
    "aborted": "⊘",
    "error": "✖",
}


class InputError(ValueError):
    """A widget value the API would refuse: shown to the user before anything is sent."""


# --- small helpers ---------------------------------------------------------------------------


def esc(text: Any) -> str:
    """`text` as literal HTML (model output and API messages may contain `<`, `&`, ...).

    The status lines and compare columns are HTML, not Markdown, so that text shows exactly as
    the API gave it (Markdown would autolink URLs and eat `*`, `_` and backslashes)."""
    return html.escape(str(text)).replace("\n", "<br>")


def short_id(job_id: str | None) -> str:
    return (job_id or "")[:8]


def format_seconds(seconds: float | None) -> str:
    """`0.4 s`, `12 s`, `2 min 05 s`."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{int(seconds)} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def format_ms(ms: float | None) -> str:
    if ms is None:
        return ""
    return f"{ms:.0f} ms" if ms < 10_000 else format_seconds(ms / 1000)


def parse_time(value: str | None) -> float | None:
    """The API's ISO timestamps as epoch seconds (None when absent or unreadable)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def elapsed_since(iso: str | None, now: float) -> float | None:
    start = parse_time(iso)
    return None if start is None else max(0.0, now - start)


# --- request fields from widget values -------------------------------------------------------


def choose_image(path: str | None, url: str | None = None) -> str:
    """The image to send: an uploaded file wins; else an http(s) URL; else an input error."""
    if path:
        return str(path)
    url = (url or "").strip()
    if url:
        if not url.lower().startswith(("http://", "https://")):
            raise InputError("the image URL must start with http:// or https://")
        return url
    raise InputError("upload an image (or give its URL) first")


def require_model(model: str | None) -> str:
    if not model:
        raise InputError("choose a model (is the API reachable? the model list comes from it)")
    return str(model)


def parse_seed(value: float | str | None) -> int | None:
    """A gr.Number's seed: blank means none; otherwise a whole number in 0..2**32-1."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError("the seed must be a whole number") from exc
    if not number.is_integer() or not 0 <= number <= 2**32 - 1:
        raise InputError("the seed must be a whole number from 0 to 4294967295")
    return int(number)


def seed_text(seed: int | None) -> str:
    """A job's seed as the seed box shows it again (blank: none)."""
    return "" if seed is None else str(seed)


def decoding_fields(strategy: str, top_p: float | None = None, temperature: float | None = None) -> dict[str, Any]:
    """The `decoding` object for a decoding choice: greedy | nucleus(top_p) | temperature(t)."""
    strategy = (strategy or "greedy").strip().lower()
    if strategy == "greedy":
        return {"strategy": "greedy"}
    if strategy == "nucleus":
        if top_p is None or not 0 < float(top_p) <= 1:
            raise InputError("nucleus decoding needs top_p in (0, 1]")
        return {"strategy": "nucleus", "top_p": float(top_p)}
    if strategy == "temperature":
        if temperature is None or not 0 < float(temperature) <= 5:
            raise InputError("temperature decoding needs a temperature in (0, 5]")
        return {"strategy": "temperature", "temperature": float(temperature)}
    raise InputError(f"unknown decoding {strategy!r}; choose one of {', '.join(DECODINGS)}")


def decoding_label(decoding: Mapping[str, Any] | None) -> str:
    """`greedy`, `nucleus(0.9)`, `temperature(0.7)`: how the demos name a decoding choice."""
    decoding = decoding or {}
    strategy = decoding.get("strategy", "greedy")
    if strategy == "nucleus":
        return f"nucleus({decoding.get('top_p')})"
    if strategy == "temperature":
        return f"temperature({decoding.get('temperature')})"
    return "greedy"


def caption_fields(
    model: str | None,
    num_beams: float = 1,
    max_new_tokens: float = 30,
    strategy: str = "greedy",
    top_p: float | None = None,
    temperature: float | None = None,
    seed: float | str | None = None,
    prompt: str | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model": require_model(model),
        "num_beams": int(num_beams),
        "max_new_tokens": int(max_new_tokens),
        "decoding": decoding_fields(strategy, top_p, temperature),
    }
    if fields["num_beams"] > 1:
        fields["early_stopping"] = True
    seed_value = parse_seed(seed)
    if seed_value is not None:
        fields["seed"] = seed_value
    if prompt and prompt.strip():
        fields["prompt"] = prompt.strip()
    return fields


def vqa_fields(model: str | None, question: str | None, top_k: float = 5) -> dict[str, Any]:
    question = (question or "").strip()
    if not question:
        raise InputError("type a question about the image")
    return {"model": require_model(model), "question": question, "top_k": int(top_k)}


def detect_prompt(prompt: str | None) -> str:
    """`dog ; person` or `detect dog;person` → `detect dog ; person` (labels trimmed, empties dropped)."""
    text = (prompt or "").strip()
    text = _DETECT_PREFIX.sub("", text, count=1).strip()
    labels = [label.strip() for label in text.split(";") if label.strip()]
    if not labels:
        raise InputError("name what to detect, e.g. 'detect face ; eye'")
    return "detect " + " ; ".join(labels)


def detect_fields(model: str | None, prompt: str | None, max_new_tokens: float = 64) -> dict[str, Any]:
    return {"model": require_model(model), "prompt": detect_prompt(prompt), "max_new_tokens": int(max_new_tokens)}


def message_text(content: Any) -> str:
    """The text of a chat message's content: a string, or Gradio's list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, Iterable):
        return "".join(message_text(part) for part in content)
    return str(content)


def chat_messages(history: Sequence[Mapping[str, Any]] | None, system: str | None, message: str | None
                  ) -> list[dict[str, str]]:
    """The request's messages: the system message, the turns so far, then the new user turn."""
    text = (message or "").strip()
    if not text:
        raise InputError("type a message")
    messages: list[dict[str, str]] = []
    if system and system.strip():
        messages.append({"role": "system", "content": system.strip()})
    for turn in history or []:
        role = turn.get("role")
        content = message_text(turn.get("content")).strip()
        if role in ("user", "assistant") and content:
            messages.append({"role": role, "content": content})
    messages.append({"role": "user", "content": text})
    return messages


def chat_fields(
    model: str | None,
    messages: list[dict[str, str]],
    temperature: float = 0.3,
    top_p: float = 0.7,
    max_new_tokens: float = 128,
    repetition_penalty: float = 1.0,
    seed: float | str | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model": require_model(model),
        "messages": messages,
        "temperature": float(temperature),
        "top_p": float(top_p),
        "max_new_tokens": int(max_new_tokens),
        "repetition_penalty": float(repetition_penalty),
    }
    seed_value = parse_seed(seed)
    if seed_value is not None:
        fields["seed"] = seed_value
    return fields


def chat_history(job: Mapping[str, Any], text: str | None = None) -> tuple[str, list[dict[str, str]]]:
    """(system message, chatbot history) of a chat job: its request's turns, then its answer so far."""
    messages = (job.get("input") or {}).get("messages") or []
    system = ""
    history: list[dict[str, str]] = []
    for message in messages:
        if message.get("role") == "system":
            system = message.get("content", "")
        else:
            history.append({"role": message.get("role", "user"), "content": message.get("content", "")})
    answer = text if text is not None else ((job.get("output") or {}).get("text") or "")
    history.append({"role": "assistant", "content": answer})
    return system, history


def compare_fields(models: Sequence[str | None], task: str, prompt: str | None = None,
                   max_new_tokens: float = 30) -> dict[str, Any]:
    """`models` and `task` of a compare job from up to three model pickers (blanks skipped); the
    prompt box's text goes where the task's type takes its free text."""
    chosen = [m for m in models if m]
    if len(chosen) < 2:
        raise InputError("choose at least two models to compare")
    if len(set(chosen)) != len(chosen):
        raise InputError("choose different models (the same model twice compares nothing)")
    if task not in COMPARE_TASKS:
        raise InputError(f"compare runs one of {', '.join(COMPARE_TASKS)}, not {task!r}")
    params = JOB_TYPES[task].params
    text = (prompt or "").strip()
    if task == "detect":
        text = detect_prompt(text)
    required = [name for name, info in params.model_fields.items() if info.is_required() and name != "type"]
    if required and not text:
        raise InputError(f"type the {TEXT_NAMES.get(required[0], required[0])} every model answers")
    spec: dict[str, Any] = {"type": task, **params.text_fields(text)}
    if "max_new_tokens" in params.model_fields:
        spec["max_new_tokens"] = min(int(max_new_tokens), field_max(params, "max_new_tokens") or int(max_new_tokens))
    return {"models": chosen, "task": spec}


def field_max(params: Any, name: str) -> int | None:
    """The largest value a params model allows in its field `name` (its `le`), if it says."""
    for rule in params.model_fields[name].metadata:
        if getattr(rule, "le", None) is not None:
            return int(rule.le)
    return None


def job_fields(job_type: str, model: str | None, text: str | None, params_json: str | None) -> dict[str, Any]:
    """The fields of a job of any type from a model, a free text and extra params as a JSON object
    (the generic tab and endpoint of a job type without its own)."""
    spec = JOB_TYPES[job_type]
    extra: Any = {}
    if (params_json or "").strip():
        try:
            extra = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise InputError(f"params: not valid JSON ({exc})") from exc
        if not isinstance(extra, dict):
            raise InputError("params: must be a JSON object, e.g. {\"max_new_tokens\": 64}")
    fields = {**spec.example, **spec.params.text_fields((text or "").strip()), **extra}
    if not spec.fan_out:
        fields["model"] = require_model(model)
    return fields


# --- the model list --------------------------------------------------------------------------


def models_for(models: Iterable[Mapping[str, Any]], task: str) -> list[str]:
    """Names of the models that run `task`, in the API's order."""
    return [m["name"] for m in models if task in (m.get("tasks") or [])]


def model_choices(models: Iterable[Mapping[str, Any]], task: str) -> list[tuple[str, str]]:
    """(label, name) dropdown choices for `task`; a model with no worker online says so."""
    choices = []
    for m in models:
        if task not in (m.get("tasks") or []):
            continue
        label = m["name"]
        if m.get("setup_error") and not m.get("ready"):
            label += " (its workers cannot load it)"
        elif m.get("group") and not m.get("workers_online"):
            label += " (loaded on first use)"  # a group worker loads it for its first job
        elif not m.get("workers_online"):
            label += " (no worker yet: jobs wait)"
        elif not m.get("ready"):
            label += " (loading)"
        choices.append((label, m["name"]))
    return choices


def pick_default(choices: Sequence[str], preferred: Sequence[str] = (), current: str | None = None) -> str | None:
    """Keep the current value if still offered, else the first preferred one offered, else the first."""
    if current in choices:
        return current
    for name in preferred:
        if name in choices:
            return name
    return choices[0] if choices else None


# --- job progress ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What the UI shows of one job at one moment (built by frontend/follow.py)."""

    job_id: str | None
    status: str  # a JobStatus value, or "submitting" / "error" (no job: the submit itself failed)
    elapsed_s: float | None = None
    text: str = ""  # generative output so far (SSE `text` events of the current attempt)
    partials: dict[str, dict[str, Any]] = field(default_factory=dict)  # compare: model -> outcome
    job: dict[str, Any] | None = None  # the latest JobView read (the final one once final)
    error: dict[str, Any] | None = None  # {code, message}
    attempt: int | None = None
    note: str | None = None  # e.g. "reconnecting to the API"

    @property
    def final(self) -> bool:
        return self.status in FINAL or self.status == "error"

    @property
    def output(self) -> dict[str, Any] | None:
        return (self.job or {}).get("output") if self.job else None

    def with_(self, **changes: Any) -> Progress:
        return replace(self, **changes)


def progress_of_job(job: Mapping[str, Any], now: float) -> Progress:
    """A snapshot from a JobView as read (GET /v1/jobs/{id}, or the submit's answer)."""
    status = job.get("status", "queued")
    partials = {}
    if job.get("type") == JobType.compare and job.get("output"):
        partials = dict((job["output"] or {}).get("results") or {})
    text = ""
    if status in FINAL and isinstance(job.get("output"), Mapping):
        text = job["output"].get("text") or ""
    return Progress(
        job_id=job.get("id"),
        status=status,
        elapsed_s=elapsed_since(job.get("created_at"), now),
        text=text,
        partials=partials,
        job=dict(job),
        error=dict(job["error"]) if job.get("error") else None,
        attempt=job.get("attempts") or None,
    )


def error_progress(code: str, message: str, job_id: str | None = None) -> Progress:
    return Progress(job_id=job_id, status="error", error={"code": code, "message": message})


def error_html(code: str | None, message: str | None) -> str:
    """An error as the API gave it: its code, then its own message."""
    return f'<span class="vlmq-error">✖ <b>{esc(code or "error")}</b>: {esc(message or "")}</span>'


def status_line(progress: Progress) -> str:
    """The job's state as one line of HTML: how long it has taken, its cache outcome, its errors."""
    icon = STATUS_ICONS.get(progress.status, "•")
    parts = [f"{icon} <b>{esc(progress.status)}</b>"]
    job = progress.job or {}
    if progress.status == "error":
        error = progress.error or {}
        return error_html(error.get("code"), error.get("message"))
    if progress.status in FINAL:
        if job.get("queue_ms") is not None:
            parts.append(f"queued {format_ms(job['queue_ms'])}")
        if job.get("run_ms") is not None:
            parts.append(f"ran {format_ms(job['run_ms'])}")
        if job.get("attempts", 0) > 1:
            parts.append(f"{job['attempts']} attempts")
        cache = job.get("cache")
        if cache in CACHE_ANSWERS:  # answered without running a model (miss and off say nothing)
            parts.append(f"cache {esc(cache.replace('_', ' '))}")
            if job.get("cached_from"):
                parts.append(f"from job <code>{esc(short_id(job['cached_from']))}</code>")
    else:
        if progress.elapsed_s is not None:
            parts.append(format_seconds(progress.elapsed_s))
        if progress.status == "queued":
            ahead = job.get("position")  # jobs ahead of it in its lane
            if ahead is not None:
                parts.append("next in the queue" if ahead == 0 else f"{esc(ahead)} ahead in the queue")
            if job.get("eta_s"):
                parts.append(f"starts in about {format_seconds(job['eta_s'])}")
        if progress.status == "running" and progress.attempt and progress.attempt > 1:
            parts.append(f"attempt {esc(progress.attempt)}")
        if progress.status == "running" and progress.text:
            parts.append(f"{len(progress.text.split())} words so far")
    if progress.job_id:
        parts.append(f"job <code>{esc(short_id(progress.job_id))}</code>")
    if progress.note:
        parts.append(f"⚠ {esc(progress.note)}")
    line = " · ".join(parts)
    if progress.status in ("failed", "canceled", "aborted"):
        error = progress.error or {}
        reason = job.get("cancel_reason")
        if error:
            line += "<br>" + error_html(error.get("code"), error.get("message"))
        elif reason:
            line += f"<br>{esc(reason)}"
    return line


# --- outputs for display ---------------------------------------------------------------------


def vqa_scores(output: Mapping[str, Any] | None) -> dict[str, float] | None:
    """ViLT's top answers as {answer: score} for a gr.Label; None for generative models (no scores)."""
    scores = (output or {}).get("scores")
    if not scores:
        return None
    result: dict[str, float] = {}
    for item in scores:
        answer = str(item.get("answer", ""))
        if answer and answer not in result:
            result[answer] = float(item.get("score", 0.0))
    return result or None


def box_rows(output: Mapping[str, Any] | None) -> list[list[Any]]:
    """A detect output's boxes as table rows (label, x0, y0, x1, y1, score), rounded to pixels."""
    rows = []
    for box in (output or {}).get("boxes") or []:
        score = box.get("score")
        rows.append([
            box.get("label", ""),
            *(round(float(box.get(k, 0.0)), 1) for k in ("x0", "y0", "x1", "y1")),
            None if score is None else round(float(score), 3),
        ])
    return rows


def boxes_summary(output: Mapping[str, Any] | None) -> str:
    """`2 × face, 1 × eye` (or `no boxes`)."""
    counts: dict[str, int] = {}
    for box in (output or {}).get("boxes") or []:
        counts[box.get("label", "?")] = counts.get(box.get("label", "?"), 0) + 1
    if not counts:
        return "no boxes"
    return ", ".join(f"{n} × {label}" for label, n in counts.items())


def output_html(task: str, output: Mapping[str, Any] | None) -> str:
    """One model's output as HTML, for any task (the compare columns)."""
    output = output or {}
    if task == JobType.vqa:
        text = f"<p><b>{esc(output.get('answer', ''))}</b></p>"
        scores = vqa_scores(output)
        if scores:
            text += "<ul>" + "".join(f"<li>{esc(a)}: {s:.3f}</li>" for a, s in scores.items()) + "</ul>"
        return text
    if task == JobType.detect:
        rows = "".join(
            f"<li>{esc(row[0])}: ({row[1]}, {row[2]}) – ({row[3]}, {row[4]})</li>" for row in box_rows(output)
        )
        return f"<p>{esc(boxes_summary(output))}</p>" + (f"<ul>{rows}</ul>" if rows else "")
    return f"<p>{esc(output.get('text', ''))}</p>"


def compare_columns(models: Sequence[str], task: str, partials: Mapping[str, Mapping[str, Any]],
                    final: bool = False, columns: int = COMPARE_COLUMNS) -> list[str]:
    """HTML for each compare column, in the order the models were chosen; spare columns blank.

    A model's column shows its output, its own error, or that it is still waiting.
    """
    cells = []
    for model in list(models)[:columns]:
        outcome = partials.get(model) or {}
        status = outcome.get("status", "queued")
        head = f"<h3>{esc(model)}</h3>"
        if status == "succeeded":
            body = output_html(task, outcome.get("output"))
        elif status in FINAL:
            error = outcome.get("error") or {}
            body = (f"<p>{STATUS_ICONS.get(status, '')} <b>{esc(status)}</b></p>"
                    f"<p>{error_html(error.get('code', status), error.get('message', ''))}</p>")
        elif final:
            body = "<p>⊘ <b>no result</b> (the compare job ended first)</p>"
        else:
            body = f"<p>{STATUS_ICONS.get(status, '◷')} <i>{esc(status)}…</i></p>"
        cells.append(head + body)
    cells += [""] * (columns - len(cells))
    return cells


def job_rows(jobs: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    """Recent jobs as table rows: short id, type, status, model(s), created, queue/run ms, attempts, cache."""
    rows = []
    for job in jobs:
        model = job.get("model") or ", ".join(job.get("models") or [])
        created = job.get("created_at") or ""
        created = created.replace("T", " ")[:19]
        rows.append([
            short_id(job.get("id")),
            job.get("type", ""),
            job.get("status", ""),
            model,
            created,
            None if job.get("queue_ms") is None else round(job["queue_ms"]),
            None if job.get("run_ms") is None else round(job["run_ms"]),
            job.get("attempts", 0),
            job.get("cache", ""),
        ])
    return rows


def jobs_summary(jobs: Sequence[Mapping[str, Any]]) -> str:
    """`12 jobs: 10 succeeded, 1 running, 1 failed`."""
    if not jobs:
        return "no jobs yet"
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.get("status", "?")] = counts.get(job.get("status", "?"), 0) + 1
    detail = ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}: {detail}"


# --- what the browser keeps (gr.BrowserState) ------------------------------------------------

_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_IMAGE_KEY = re.compile(r"^[0-9a-f]{16,64}$")


def parse_job_id(value: Any) -> str:
    """A job id typed or sent by a caller: letters, digits, `-` and `_` only (it goes into a URL path)."""
    job_id = value.strip() if isinstance(value, str) else ""
    if not job_id:
        raise InputError("give a job id")
    if not _JOB_ID.match(job_id):
        raise InputError(f"{job_id[:80]!r} is not a job id")
    return job_id


def remembered(job_id: str, image_key: str | None = None, url: str | None = None) -> dict[str, Any]:
    """The per-tab record kept in the browser's localStorage: the last job and its input image."""
    return {"job_id": job_id, "image": image_key, "url": url}


def remembered_job(state: Any) -> tuple[str | None, str | None, str | None]:
    """(job id, image key, url) from a BrowserState value; anything malformed reads as nothing."""
    if not isinstance(state, Mapping):
        return None, None, None
    job_id = state.get("job_id")
    image = state.get("image")
    url = state.get("url")
    job_id = job_id if isinstance(job_id, str) and _JOB_ID.match(job_id) else None
    image = image if isinstance(image, str) and _IMAGE_KEY.match(image) else None
    url = url if isinstance(url, str) and url.lower().startswith(("http://", "https://")) else None
    return job_id, image, url
