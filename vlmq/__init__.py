"""vlmq: an asynchronous job service for vision-language models.

Where things are (installed names, then folders):

- ``vlmq`` (vlmq/): what every part shares: settings, the model registry, job types, the job
  store in Redis, image checks, the Python client and the ``vlmq`` command line.
- ``vlmq.api`` (api/): the FastAPI service: validates, answers from the cache, enqueues.
- ``vlmq.tasks`` (tasks/): the Celery app and the model-pinned workers with their adapters.
- ``vlmq.cache`` (cache/): GPTCache in front of the queue.
- ``vlmq.frontend`` (frontend/): the Gradio app, an HTTP client of the API only.

Imports go one way: api, tasks, cache and frontend import ``vlmq``'s shared modules; ``api``
imports ``cache`` and the Celery app of ``tasks``; nothing imports ``api`` or ``frontend``.
"""

__version__ = "0.1.0"
