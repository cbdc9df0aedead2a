"""The frontend's API, driven through the real `gradio_client` against a real stack.

`vlmq frontend` runs as a real process pointed at the session stack (API + one worker per model).
Every action has one named endpoint with named parameters and outputs; the page's own handlers
(BrowserState, leases, resume, clear, cancel, page-load loaders) are not part of the API. The demo
models have random weights: the checks are on structure (statuses, ids, output fields), never wording.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from skimage import data

from tests.utils.processes import Proc, spawn, start_api
from vlmq.cli.redis_server import free_port

#: one endpoint per job type (vlmq/jobtypes/; a type without its own endpoint gets the generic one), and /job
ENDPOINTS = {"/caption", "/vqa", "/detect", "/segment", "/explain", "/ocr", "/chat", "/compare", "/job"}
OUTPUTS = {
    "/ocr": ["text", "job"],
    "/segment": ["text", "job"],
    "/explain": ["text", "job"],
    "/caption": ["caption", "job"],
    "/vqa": ["answer", "job"],
    "/detect": ["annotated", "boxes", "job"],
    "/chat": ["reply", "history", "job"],
    "/compare": ["results", "job"],
    "/job": ["job"],
}


def start_frontend(api_url: str, base_env: dict[str, str], log_dir: Path) -> tuple[Proc, str]:
    """`vlmq frontend` as a real process, pointed at `api_url`, once it answers."""
    port = free_port()
    env = {**base_env, "VLMQ_API_URL": api_url, "VLMQ_FRONTEND_PORT": str(port)}
    proc = spawn("frontend", [sys.executable, "-m", "vlmq.cli", "frontend"], env, log_dir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if not proc.alive():
            pytest.fail(f"the frontend exited ({proc.process.returncode}):\n{proc.tail()}")
        try:
            if httpx.get(url + "/", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.stop()
            pytest.fail(f"the frontend did not start in time:\n{proc.tail()}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def frontend(stack, base_env: dict[str, str], log_dir: Path) -> Iterator[Client]:
    proc, url = start_frontend(stack.url, base_env, log_dir)
    try:
        yield Client(url, verbose=False)
        assert proc.alive(), f"the frontend died:\n{proc.tail()}"
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> str:
    """scikit-image's astronaut: a real photo with a real face."""
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return str(path)


def succeeded(job: dict, job_type: str) -> dict:
    """The job's output, after checking that it is a finished job of `job_type`."""
    assert job["status"] == "succeeded", job
    assert job["type"] == job_type and isinstance(job["id"], str) and job["id"], job
    assert isinstance(job["output"], dict), job
    return job["output"]


def test_the_api_is_one_named_endpoint_per_action(frontend: Client) -> None:
    api = frontend.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == ENDPOINTS, sorted(api["named_endpoints"])
    assert not api["unnamed_endpoints"], api["unnamed_endpoints"]
    for name, endpoint in api["named_endpoints"].items():
        assert not name.startswith(("/lambda", "/submit", "/load", "/resume", "/restore", "/cancel", "/clear"))
        params = [p["parameter_name"] for p in endpoint["parameters"]]
        assert all(params) and len(set(params)) == len(params), (name, params)
        assert [r["label"] for r in endpoint["returns"]] == OUTPUTS[name], (name, endpoint["returns"])
        assert endpoint["description"], name
    caption = {p["parameter_name"]: p for p in api["named_endpoints"]["/caption"]["parameters"]}
    assert list(caption)[:2] == ["image", "model"]
    assert caption["image"]["python_type"]["type"] == "filepath"
    # Any model name is accepted; the models the API had when the frontend started are listed
    # (not as the only values: no Literal[...]) and the default is the tab's preferred one.
    model = caption["model"]
    assert model["python_type"]["type"] == "str", model
    assert {"blip-base", "blip-large"} <= set(model["type"]["examples"]), model
    assert model["parameter_default"] == "blip-base", model
    compare = {p["parameter_name"]: p for p in api["named_endpoints"]["/compare"]["parameters"]}
    assert compare["models"]["python_type"]["type"] == "list[str]", compare["models"]
    assert not compare["models"]["parameter_has_default"]
    job = {p["parameter_name"]: p for p in api["named_endpoints"]["/job"]["parameters"]}
    assert list(job) == ["job_id", "follow"]
    # Not even as undocumented endpoints: the page's handlers are private.
    everything = httpx.get(f"{frontend.src.rstrip('/')}/gradio_api/info", params={"all_endpoints": True}).json()
    assert set(everything["named_endpoints"]) == ENDPOINTS, sorted(everything["named_endpoints"])


def test_caption_then_the_job_by_its_id(frontend: Client, astronaut: str) -> None:
    caption, job = frontend.predict(image=handle_file(astronaut), model="blip-base", max_new_tokens=12,
                                    api_name="/caption")
    output = succeeded(job, "caption")
    assert job["model"] == "blip-base"
    assert isinstance(caption, str) and caption == output["text"] and caption.strip(), (caption, output)

    again = frontend.predict(job_id=job["id"], api_name="/job")
    assert again["id"] == job["id"] and again["status"] == "succeeded" and again["output"] == output
    once = frontend.predict(job_id=job["id"], follow=False, api_name="/job")
    assert once["id"] == job["id"] and once["status"] == "succeeded"


def test_caption_streams_its_snapshots(frontend: Client, astronaut: str) -> None:
    """`submit()` yields every snapshot; the last is what `predict()` returns."""
    run = frontend.submit(image=handle_file(astronaut), model="blip-large", max_new_tokens=8, api_name="/caption")
    updates = list(run)
    statuses = [job["status"] for _, job in updates]
    assert statuses[-1] == "succeeded" and len(updates) >= 2, statuses
    assert len({job["id"] for _, job in updates}) == 1  # one job, followed
    assert updates[-1] == tuple(run.result())


def test_vqa(frontend: Client, astronaut: str) -> None:
    answer, job = frontend.predict(image=handle_file(astronaut), question="what is she holding?", model="vilt-vqa",
                                   top_k=3, api_name="/vqa")
    output = succeeded(job, "vqa")
    assert answer == output["answer"] and answer.strip()
    assert 1 <= len(output["scores"]) <= 3, output  # ViLT scores its top answers


def test_a_job_type_without_an_endpoint_of_its_own_gets_the_generic_one(frontend: Client, astronaut: str) -> None:
    api = frontend.view_api(return_format="dict", print_info=False)["named_endpoints"]["/ocr"]
    assert [p["parameter_name"] for p in api["parameters"]] == ["image", "model", "text", "params", "image_url"]
    text, job = frontend.predict(image=handle_file(astronaut), model="paligemma", params='{"max_new_tokens": 4}',
                                 api_name="/ocr")
    output = succeeded(job, "ocr")
    assert text == output["text"] and job["input"]["max_new_tokens"] == 4
    with pytest.raises(AppError, match="params: must be a JSON object"):
        frontend.predict(image=handle_file(astronaut), model="paligemma", params="[1]", api_name="/ocr")


def test_detect_finds_the_astronauts_face(frontend: Client, astronaut: str) -> None:
    annotated, boxes, job = frontend.predict(image=handle_file(astronaut), prompt="detect face ; eye",
                                             model="faces", api_name="/detect")
    output = succeeded(job, "detect")
    assert boxes == output["boxes"]
    assert any(box["label"] == "face" for box in boxes), boxes
    assert {"label", "x0", "y0", "x1", "y1"} <= set(boxes[0])
    with Image.open(annotated) as image:  # the worker's annotated PNG, downloaded by gradio_client
        assert image.size == (512, 512)


def test_chat_two_turns(frontend: Client, astronaut: str) -> None:
    reply, history, job = frontend.predict(image=handle_file(astronaut), message="Describe this image.",
                                           model="llava-chat", max_new_tokens=8, seed=3, api_name="/chat")
    output = succeeded(job, "chat")
    assert reply == output["text"]
    assert [turn["role"] for turn in history] == ["user", "assistant"]
    assert history[0]["content"] == "Describe this image." and history[1]["content"] == reply

    reply2, history2, job2 = frontend.predict(image=handle_file(astronaut), message="And the colours?",
                                              model="llava-chat", history=history, max_new_tokens=8,
                                              api_name="/chat")
    succeeded(job2, "chat")
    assert job2["id"] != job["id"]
    assert [m["role"] for m in job2["input"]["messages"]] == ["user", "assistant", "user"]  # the turns were sent
    assert history2[:2] == history and history2[-1] == {"role": "assistant", "content": reply2}


def test_compare_two_models(frontend: Client, astronaut: str) -> None:
    results, job = frontend.predict(image=handle_file(astronaut), models=["blip-base", "blip-large"],
                                    task="caption", max_new_tokens=8, api_name="/compare")
    output = succeeded(job, "compare")
    assert job["models"] == ["blip-base", "blip-large"]
    assert set(results) == {"blip-base", "blip-large"} and results == output["results"]
    for outcome in results.values():
        assert outcome["status"] == "succeeded" and outcome["job_id"] and "text" in outcome["output"], outcome


def test_errors_carry_the_apis_code_and_message(frontend: Client, astronaut: str) -> None:
    with pytest.raises(AppError, match=r"unknown_model: .*no-such-model"):
        frontend.predict(image=handle_file(astronaut), model="no-such-model", api_name="/caption")
    with pytest.raises(AppError, match=r"not_found: "):
        frontend.predict(job_id="0123456789abcdef", api_name="/job")
    with pytest.raises(AppError, match=r"invalid_input: .*job id"):
        frontend.predict(job_id="../v1/models", api_name="/job")
    with pytest.raises(AppError, match=r"invalid_input: .*two models"):
        frontend.predict(image=handle_file(astronaut), models=["blip-base"], api_name="/compare")
    with pytest.raises(AppError, match=r"invalid_input: .*upload an image"):
        frontend.predict(question="what?", model="vilt-vqa", api_name="/vqa")


def test_a_frontend_started_before_its_api(base_env: dict[str, str], log_dir: Path, stack, astronaut: str) -> None:
    """No model list at start: any model name still works once the API runs (no page load needed)."""
    port = free_port()
    proc, url = start_frontend(f"http://127.0.0.1:{port}", base_env, log_dir)
    api = None
    try:
        frontend = Client(url, verbose=False)
        params = frontend.view_api(return_format="dict", print_info=False)["named_endpoints"]["/caption"]["parameters"]
        model = next(p for p in params if p["parameter_name"] == "model")
        assert model["python_type"]["type"] == "str" and "examples" not in model["type"], model
        with pytest.raises(AppError, match="api_unreachable"):
            frontend.predict(image=handle_file(astronaut), model="blip-base", api_name="/caption")
        api, _ = start_api(base_env, log_dir, port=port)  # a second API on the stack's Redis and workers
        caption, job = frontend.predict(image=handle_file(astronaut), model="blip-base", max_new_tokens=6,
                                        api_name="/caption")
        assert succeeded(job, "caption")["text"] == caption
    finally:
        if api is not None:
            api.stop()
        proc.stop()
