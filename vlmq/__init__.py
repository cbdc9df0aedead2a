"""vlmq: an asynchronous job service for vision-language models.

Where things are (installed names, then folders):

- ``vlmq`` (vlmq/): the core, what both the API and the workers need: settings, the model
  registry, job types (one module each), the job schema and store in Redis, the keyspace, queues,
  lanes, admission, blobs, image checks.
- ``vlmq.api`` (api/): the FastAPI service: validates, answers from the cache, enqueues.
- ``vlmq.tasks`` (tasks/): the Celery app and the model-pinned workers with their adapters, and
  the demo-model builder.
- ``vlmq.cache`` (cache/): GPTCache in front of the queue.
- ``vlmq.frontend`` (frontend/): the Gradio app, an HTTP client of the API only.
- ``vlmq.client`` (client/): the Python SDK of the API.
- ``vlmq.cli`` (cli/): the entry points: the ``vlmq`` command, the launcher, the embedded Redis.

Imports go one way: every part imports the core, the core imports no part; ``api`` imports
``cache`` and the Celery app of ``tasks``; ``frontend`` the client; only ``cli`` imports the rest,
and nothing imports ``cli``, ``api`` or ``frontend``.
"""

__version__ = "0.1.0"
