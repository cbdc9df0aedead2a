"""Structured JSON logs, one object per line, from the API and the workers.

Each line carries `component` (api / worker / webhooks), `model` for workers, and `job_id` when
the line is about one job (`log.info("...", extra={"job_id": ...})`).
`VLMQ_LOG_FORMAT=text` (a setting) gives plain lines for a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict[str, str]) -> None:
        super().__init__()
        self.static = static

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self.static,
        }
        job_id = getattr(record, "job_id", None)
        if job_id:
            line["job_id"] = job_id
        if getattr(record, "error_code", None):
            line["error_code"] = record.error_code
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(component: str, log_format: str = "json", level: str = "INFO", **static: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "text":
        handler.setFormatter(logging.Formatter(f"%(asctime)s {component} %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter({"component": component, **static}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
