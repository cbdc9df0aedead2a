"""The OpenAPI schema says what the API enforces, as far as JSON Schema can say it.

FastAPI's schema is completed here with what it cannot see:

- the job request (`JobRequest`), in two forms: the JSON body, where `image_url` is required, and
  the multipart `request` part (`JobRequestPart`, sent as JSON beside the `image` file part),
  where there is no `image_url`;
- each job type's `model` is one of the registered models that run that type, and a compare job is
  one variant per task type whose `models` are distinct models that run that task;
- the batch body (`jobs`: 1 to `max_batch_jobs` objects, each checked alone and reported in
  `errors` when it is not a valid job request), and the cache-clear body's `model`;
- the request headers' own forms (`Idempotency-Key` length, `Cancel-After` duration).

What a schema cannot say is documented instead (docs/api.md): whether an image decodes, whether a URL
is public and answers, cross-field rules (a `nucleus` decoding needs `top_p`, a chat ends with the
user's turn), the ranges of header values. Those are 422s naming the field.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter

from vlmq.api.headers import SUBMIT_HEADERS
from vlmq.jobs import REQUESTS as REQUEST_MODELS
from vlmq.jobs import JobRequest
from vlmq.jobtypes import JOB_TYPES, MODEL_TYPES
from vlmq.registry import Registry

REF = "#/components/schemas/{model}"
#: The request models of the job types that run on one model, as pydantic names them, and their params
#: models (a fan-out's task); the fan-out types' request models.
REQUESTS = {name: REQUEST_MODELS[name].__name__ for name in MODEL_TYPES}
PARAMS = {name: JOB_TYPES[name].params.__name__ for name in MODEL_TYPES}
FAN_OUTS = {name: REQUEST_MODELS[name].__name__ for name, spec in JOB_TYPES.items() if spec.fan_out}
MULTIPART_ENCODING = {"request": {"contentType": "application/json"}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _type_required(schema: dict[str, Any]) -> None:
    schema["required"] = sorted({*schema.get("required", []), "type"})


def _request_forms(defs: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """The request schemas: `JobRequest` (JSON body) and `JobRequestPart` (multipart part)."""
    out = {name: schema for name, schema in defs.items() if name not in {*REQUESTS.values(), *FAN_OUTS.values()}}
    for name in PARAMS.values():
        out[name] = copy.deepcopy(defs[name])
        _type_required(out[name])
    json_variants, part_variants = [], []
    for job_type, name in REQUESTS.items():
        models = [m.name for m in registry.for_task(job_type)]
        if not models:
            continue  # no model runs it: no request of this type can be valid
        body = copy.deepcopy(defs[name])
        _type_required(body)
        body["properties"]["model"] = {"type": "string", "enum": models, "description": "A registered model "
                                       f"that runs {job_type} (GET /v1/models)."}
        json_variants.append(_with_image(out, name, body))
        part_variants.append(_without_image(out, f"{name}Part", body))
    for fan_out_name in FAN_OUTS.values():  # one variant per task type (CompareCaptionRequest, ...)
        fan_out = defs[fan_out_name]
        for job_type, params in PARAMS.items():
            models = [m.name for m in registry.for_task(job_type)]
            if len(models) < fan_out["properties"]["models"]["minItems"]:
                continue
            body = copy.deepcopy(fan_out)
            _type_required(body)
            body["properties"]["task"] = {**_ref(params), "description": fan_out["properties"]["task"]["description"]}
            body["properties"]["models"].update(items={"type": "string", "enum": models}, uniqueItems=True,
                                                description=f"Distinct registered models that run {job_type}.")
            name = f"{fan_out_name.removesuffix('Request')}{job_type.capitalize()}Request"
            json_variants.append(_with_image(out, name, body))
            part_variants.append(_without_image(out, f"{name}Part", body))
    out.update(
        JobRequest={"oneOf": [_ref(n) for n in json_variants], "description": "A job, sent as JSON with `image_url`."},
        JobRequestPart={"oneOf": [_ref(n) for n in part_variants],
                        "description": "A job, sent as the multipart `request` part beside the `image` file."},
    )
    return out


def _with_image(out: dict[str, Any], name: str, body: dict[str, Any]) -> str:
    schema = copy.deepcopy(body)
    image = schema["properties"]["image_url"]
    schema["properties"]["image_url"] = {"type": "string", "minLength": 1,
                                         "maxLength": image["anyOf"][0]["maxLength"],
                                         "description": image["description"]}
    schema["required"] = sorted({*schema["required"], "image_url"})
    out[name] = schema
    return name


def _without_image(out: dict[str, Any], name: str, body: dict[str, Any]) -> str:
    schema = copy.deepcopy(body)
    del schema["properties"]["image_url"]
    out[name] = schema
    return name


def _link(schema: dict[str, Any], source: tuple[str, str], parameter: str, targets: list[tuple[str, str]]) -> None:
    """OpenAPI links from what `source` answers (its `id`) to the operations every such resource has.
    (A job's artifacts are not one: most jobs have none.)"""
    method, path = source
    links = {}
    for target_method, target_path in targets:
        operation_id = schema["paths"][target_path][target_method]["operationId"]
        links[operation_id] = {"operationId": operation_id, "parameters": {parameter: "$response.body#/id"}}
    for status, response in schema["paths"][path][method]["responses"].items():
        if status.startswith("2"):
            response["links"] = links


def complete(schema: dict[str, Any], registry: Registry, max_batch_jobs: int) -> dict[str, Any]:
    """FastAPI's schema, completed (see the module's docstring)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    request = TypeAdapter(JobRequest).json_schema(ref_template=REF)
    components.update(_request_forms(request.pop("$defs", {}), registry))

    submit = schema["paths"]["/v1/jobs"]["post"]
    submit["requestBody"] = {"required": True, "content": {
        "application/json": {"schema": _ref("JobRequest")},
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["request", "image"], "additionalProperties": False,
                       "properties": {"request": _ref("JobRequestPart"),
                                      "image": {"type": "string", "format": "binary"}}},
            "encoding": MULTIPART_ENCODING,
        },
    }}
    submit["parameters"] = [*copy.deepcopy(SUBMIT_HEADERS), *submit.get("parameters", [])]

    schema["paths"]["/v1/batches"]["post"]["requestBody"] = {"required": True, "content": {"application/json": {
        "schema": {
            "type": "object", "required": ["jobs"], "additionalProperties": False,
            "properties": {"jobs": {
                "type": "array", "minItems": 1, "maxItems": max_batch_jobs,
                "items": {"type": "object",
                          "description": "A job request (JobRequest). Each item is checked alone: an invalid one is "
                                         "reported in `errors` with its index, and the others are accepted."},
            }},
        },
    }}}
    _link(schema, ("post", "/v1/jobs"), "job_id", [("get", "/v1/jobs/{job_id}"), ("get", "/v1/jobs/{job_id}/events"),
                                                   ("post", "/v1/jobs/{job_id}/cancel"),
                                                   ("get", "/v1/jobs/{job_id}/deliveries")])
    _link(schema, ("post", "/v1/batches"), "batch_id", [("get", "/v1/batches/{batch_id}")])
    clear = components["CacheClear"]["properties"]["model"]
    clear["anyOf"] = [{"type": "string", "enum": registry.names}, {"type": "null"}]
    return schema


def install(app: FastAPI, registry: Registry, max_batch_jobs: int) -> None:
    """`app.openapi()` answers the completed schema (built once)."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            app.openapi_schema = complete(base(), registry, max_batch_jobs)
        return app.openapi_schema

    app.openapi = openapi
