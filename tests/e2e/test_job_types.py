"""Every job type end to end: real HTTP to the API, real Redis, real model-pinned workers."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from tests.utils.images import astronaut, cat, coffee, data_uri, encode
from tests.utils.jobs import run, submit, wait


@pytest.fixture(scope="module")
def api(stack) -> httpx.Client:
    with stack.client() as client:
        yield client


@pytest.mark.parametrize(("model", "job_type"), [("blip-large", "caption"), ("paligemma", "detect"),
                                                ("blip-vqa", "vqa"), ("llava-chat", "chat"), ("paligemma", "ocr"),
                                                ("paligemma", "segment")])
def test_longest_generation_allowed_runs(api: httpx.Client, model: str, job_type: str) -> None:
    """The largest max_new_tokens the API accepts must fit the model (no position overflow)."""
    from vlmq.jobtypes import PARAMS

    limit = PARAMS[job_type].model_fields["max_new_tokens"].metadata
    most = next(m.le for m in limit if hasattr(m, "le"))
    body = {"type": job_type, "model": model, "image_url": data_uri(cat()), "max_new_tokens": most,
            "question": "what is it?", "prompt": "detect cat" if job_type == "detect" else "segment cat",
            "messages": [{"role": "user", "content": "Describe it."}]}
    keep = {"caption": [], "vqa": ["question"], "detect": ["prompt"], "chat": ["messages"], "ocr": [],
            "segment": ["prompt"]}[job_type]
    body = {k: v for k, v in body.items() if k not in {"question", "prompt", "messages"} or k in keep}
    job = run(api, body)
    assert job["status"] == "succeeded", job


def test_caption_json_data_uri(api: httpx.Client) -> None:
    job = run(api, {"type": "caption", "model": "blip-base", "image_url": data_uri(cat()), "max_new_tokens": 8})
    assert job["status"] == "succeeded", job
    assert isinstance(job["output"]["text"], str)
    assert job["model"] == "blip-base" and job["attempts"] == 1
    assert job["queue_ms"] >= 0 and job["run_ms"] > 0
    assert job["started_at"] >= job["created_at"] and job["completed_at"] >= job["started_at"]


def test_caption_upload_with_beams_and_sampling(api: httpx.Client) -> None:
    image = encode(coffee(), "JPEG")
    beams = run(api, {"type": "caption", "model": "blip-large", "num_beams": 3, "early_stopping": True,
                      "max_new_tokens": 10}, image=image)
    assert beams["status"] == "succeeded", beams
    body = {"type": "caption", "model": "blip-large", "max_new_tokens": 10, "seed": 7,
            "decoding": {"strategy": "nucleus", "top_p": 0.9}, "cache": False}
    first, second = run(api, body, image=image), run(api, body, image=image)
    assert first["status"] == second["status"] == "succeeded"
    assert first["output"] == second["output"]  # a fixed seed reproduces sampled decoding


def test_vqa_generative_and_classifier(api: httpx.Client) -> None:
    uri = data_uri(astronaut())
    blip = run(api, {"type": "vqa", "model": "blip-vqa", "image_url": uri, "question": "what is she holding?"})
    assert blip["status"] == "succeeded", blip
    assert isinstance(blip["output"]["answer"], str) and blip["output"]["scores"] is None
    vilt = run(api, {"type": "vqa", "model": "vilt-vqa", "image_url": uri, "question": "how many people?",
                     "top_k": 4})
    assert vilt["status"] == "succeeded", vilt
    scores = vilt["output"]["scores"]
    assert len(scores) == 4 and scores[0]["answer"] == vilt["output"]["answer"]
    assert [s["score"] for s in scores] == sorted((s["score"] for s in scores), reverse=True)


def test_detect_faces_real_boxes_and_annotated_png(api: httpx.Client) -> None:
    job = run(api, {"type": "detect", "model": "faces", "image_url": data_uri(astronaut()),
                    "prompt": "detect face"})
    assert job["status"] == "succeeded", job
    out = job["output"]
    assert (out["width"], out["height"]) == (512, 512)
    faces = [b for b in out["boxes"] if b["label"] == "face"]
    assert faces, out
    centre = [((b["x0"] + b["x1"]) / 2, (b["y0"] + b["y1"]) / 2) for b in faces]
    assert any(150 < x < 310 and 30 < y < 200 for x, y in centre), out  # the astronaut's face
    png = api.get(out["artifacts"]["annotated.png"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    annotated = Image.open(io.BytesIO(png.content))
    assert annotated.size == (512, 512)
    assert annotated.convert("RGB").tobytes() != astronaut().tobytes()  # boxes were drawn


def test_detect_paligemma_prompt(api: httpx.Client) -> None:
    job = run(api, {"type": "detect", "model": "paligemma", "image_url": data_uri(cat()),
                    "prompt": "detect cat ; person", "max_new_tokens": 12})
    assert job["status"] == "succeeded", job
    out = job["output"]
    assert (out["width"], out["height"]) == cat().size
    assert isinstance(out["text"], str)
    for box in out["boxes"]:  # random weights: maybe none, but any box lies inside the image
        assert 0 <= box["x0"] <= box["x1"] <= out["width"] and 0 <= box["y0"] <= box["y1"] <= out["height"]
    assert api.get(out["artifacts"]["annotated.png"]).status_code == 200


def test_segment_paligemma_masks_in_the_original_orientation(api: httpx.Client) -> None:
    from vlmq import rle

    stored = cat().resize((300, 200))  # stored 300 x 200, shown rotated by 90 degrees: 200 x 300
    exif = stored.getexif()
    exif[0x0112] = 6
    job = run(api, {"type": "segment", "model": "paligemma", "prompt": "segment cat ; ear", "max_new_tokens": 64},
              image=encode(stored, "JPEG", exif=exif.tobytes()))
    assert job["status"] == "succeeded", job
    out = job["output"]
    assert (out["width"], out["height"]) == (200, 300) and isinstance(out["text"], str)
    for obj in out["objects"]:  # random weights: maybe none; any object is inside the shown image
        assert 0 <= obj["x0"] < obj["x1"] <= 200 and 0 <= obj["y0"] < obj["y1"] <= 300
        if obj["mask"] is not None:
            assert obj["mask"]["size"] == [300, 200] and rle.area(obj["mask"]) == obj["area"]
        else:
            assert obj["warning"]
    png = Image.open(io.BytesIO(api.get(out["artifacts"]["annotated.png"]).content))
    assert png.size == (200, 300)
    refused = api.post("/v1/jobs", json={"type": "segment", "model": "blip-base", "prompt": "segment cat",
                                         "image_url": data_uri(cat())})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "model", refused.text
    bad = api.post("/v1/jobs", json={"type": "segment", "model": "paligemma", "prompt": "detect cat",
                                     "image_url": data_uri(cat())})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "prompt", bad.text


def test_explain_caption_and_vqa_with_overlays_in_the_original_orientation(api: httpx.Client) -> None:
    from vlmq.jobtypes.explain import decode_heat

    stored = coffee().resize((240, 160))  # stored 240 x 160, shown rotated by 90 degrees: 160 x 240
    exif = stored.getexif()
    exif[0x0112] = 6
    image = encode(stored, "JPEG", exif=exif.tobytes())
    for model, question in (("blip-base", None), ("blip-vqa", "what is in the cup?"), ("llava-chat", "What is this?")):
        body = {"type": "explain", "model": model, "max_new_tokens": 6, "token_images": True,
                **({"question": question} if question else {})}
        job = run(api, body, image=image)
        assert job["status"] == "succeeded", job
        out = job["output"]
        assert out["tokens"] and out["method"]
        for token in out["tokens"]:
            assert abs(float(decode_heat(token["heat"], out["grid"]).sum()) - 1) < 1e-2
        names = set(out["artifacts"])
        assert names == {"overlay.png"} | {f"token/{i}.png" for i in range(len(out["tokens"]))}
        for name in ("overlay.png", "token/0.png"):
            png = api.get(out["artifacts"][name])
            assert png.status_code == 200 and png.headers["content-type"] == "image/png", name
            assert Image.open(io.BytesIO(png.content)).size == (160, 240)
    refused = run(api, {"type": "explain", "model": "blip-base", "question": "what is it?"}, image=image)
    assert refused["status"] == "failed" and "question" in refused["error"]["message"], refused


def test_chat_system_and_history(api: httpx.Client) -> None:
    messages = [
        {"role": "system", "content": "Carefully follow the user's request."},
        {"role": "user", "content": "What is in this picture?"},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "What colour is it?"},
    ]
    job = run(api, {"type": "chat", "model": "llava-chat", "image_url": data_uri(cat()), "messages": messages,
                    "temperature": 0.3, "top_p": 0.7, "max_new_tokens": 12, "repetition_penalty": 1.1})
    assert job["status"] == "succeeded", job
    assert isinstance(job["output"]["text"], str)
    assert job["input"]["messages"] == messages


def test_compare_models_and_checkpoints(api: httpx.Client) -> None:
    uri = data_uri(coffee())
    job = run(api, {"type": "compare", "models": ["blip-base", "blip-large"], "image_url": uri,
                    "task": {"type": "caption", "max_new_tokens": 8}})
    assert job["status"] == "succeeded", job
    results = job["output"]["results"]
    assert list(results) == ["blip-base", "blip-large"] and job["models"] == ["blip-base", "blip-large"]
    for outcome in results.values():
        assert outcome["status"] == "succeeded" and isinstance(outcome["output"]["text"], str)
        child = api.get(f"/v1/jobs/{outcome['job_id']}").json()
        assert child["status"] == "succeeded" and child["output"] == outcome["output"]
    ckpts = run(api, {"type": "compare", "models": ["llava-ft@100", "llava-ft@200"], "image_url": uri,
                      "task": {"type": "chat", "messages": [{"role": "user", "content": "Describe it."}],
                               "temperature": 0, "max_new_tokens": 8}})
    assert ckpts["status"] == "succeeded", ckpts
    texts = [r["output"]["text"] for r in ckpts["output"]["results"].values()]
    assert texts[0] != texts[1]  # two checkpoints, two sets of weights


def test_compare_one_model_failing_does_not_fail_the_other(api: httpx.Client) -> None:
    # the face detector knows only faces and eyes: "dog" is its own error; PaliGemma runs it
    job = run(api, {"type": "compare", "models": ["paligemma", "faces"], "image_url": data_uri(astronaut()),
                    "task": {"type": "detect", "prompt": "detect dog", "max_new_tokens": 8}})
    assert job["status"] == "succeeded", job
    results = job["output"]["results"]
    assert results["paligemma"]["status"] == "succeeded"
    assert results["faces"]["status"] == "failed"
    assert "face" in results["faces"]["error"]["message"]


def test_ocr_reads_text_on_paligemma_and_a_chat_model(api: httpx.Client) -> None:
    """The job type added as one module (vlmq/jobtypes/ocr.py) plus an entry in each adapter's table;
    the API, the registry check and the worker know it from that module alone."""
    for model in ("paligemma", "llava-chat"):
        job = run(api, {"type": "ocr", "model": model, "image_url": data_uri(coffee()), "max_new_tokens": 6,
                        "cache": False})
        assert job["status"] == "succeeded" and isinstance(job["output"]["text"], str), job
        assert job["input"] == {"type": "ocr", "seed": None, "max_new_tokens": 6}
    refused = submit(api, {"type": "ocr", "model": "blip-base", "image_url": data_uri(coffee())})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "model_cannot_run"
    assert submit(api, {"type": "ocr", "model": "paligemma", "image_url": data_uri(coffee()),
                        "question": "x"}).status_code == 422  # its params are its own


def test_models_list_shows_workers_and_queues(api: httpx.Client) -> None:
    models = {m["name"]: m for m in api.get("/v1/models").json()["models"]}
    assert models["blip-base"]["ready"] and models["blip-base"]["workers_ready"] >= 1
    assert models["blip-base"]["revision"]
    assert models["llava-ft@200"]["checkpoint_step"] == 200


def test_unknown_job_is_404(api: httpx.Client) -> None:
    response = api.get("/v1/jobs/does-not-exist")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert api.get("/v1/jobs/does-not-exist/artifacts/annotated.png").status_code == 404


def test_caption_job_has_no_annotated_image(api: httpx.Client) -> None:
    response = submit(api, {"type": "caption", "model": "blip-base", "image_url": data_uri(cat())})
    job = wait(api, response.json()["id"])
    assert api.get(f"/v1/jobs/{job['id']}/artifacts/annotated.png").status_code == 404
