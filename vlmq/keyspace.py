"""Every Redis key vlmq writes or reads: each template once, here, grouped by the module that owns it.

A template is a `str.format` template (``JOB.format(job_id)``) or a prefix (``METRICS_PREFIX + name``);
the Lua scripts build the same keys from these (vlmq/store.py, vlmq/admission.py), so a key's name
lives in one place. Changing a string here renames live data: existing keys become invisible.

Groups:

- jobs (vlmq/store.py, vlmq/admission.py): records, event streams, joiners, recent jobs per owner;
- lanes (vlmq/lanes.py): pending jobs per lane, bulk backlog per key, batch pace;
- fleet (vlmq/fleet.py): worker heartbeats, worker state, setup errors, weights revisions, group
  workers, their load locks, and the use scores of group members;
- API keys (vlmq/keys.py): key records, ids, token buckets;
- webhooks (vlmq/notify.py, tasks/webhooks.py, vlmq/webhook_secrets.py): delivery logs, the
  anonymous signing secret;
- metrics (vlmq/metrics_store.py): counter and histogram hashes;
- answer cache (cache/exact.py, api/answers.py): exact entries, per-model index, revisions seen,
  generations;
- API (api/idempotency.py, api/routes/batches.py): idempotency keys, batches;
- OpenAI Batch API (api/openai_files.py, api/openai_batches.py): files, batches, their progress;
- worker locks (tasks/reconcile.py): reconciler and blob sweep locks.

Not here: the broker's keys. Queue lists are named by vlmq/queues.py (``vlmq.<model>.<lane>``, plus
one list per kombu priority step), and kombu owns its own (``unacked``, tasks/reconcile.py).

This module imports nothing from vlmq: every other module may import it.
"""

from __future__ import annotations

# --- jobs (vlmq/store.py, vlmq/admission.py); all expire after job_ttl_s
JOB = "vlmq:job:{}"  # hash per job id: the job record (JobRecord.to_hash, plus outcome:{model} fields)
EVENTS = "vlmq:events:{}"  # stream per job id: status changes and generated text
JOINERS = "vlmq:joiners:{}"  # set per job id: jobs joined to it (single flight), settled when it ends
RECENT = "vlmq:recent:{}"  # sorted set per owner: job id -> created_at (top-level jobs only)

# --- lanes (vlmq/lanes.py)
PENDING = "vlmq:pending:{}:{}"  # sorted set per model and lane: job id -> admitted at, until taken
BACKLOG = "vlmq:backlog:{}:{}"  # string (counter) per model and owner: bulk jobs waiting (fair share)
PACE = "vlmq:pace:{}"  # hash per model: batch_s, a moving average of a batch's service time

# --- fleet (vlmq/fleet.py)
WORKERS = "vlmq:workers:{}"  # sorted set per model: worker name -> time of its last heartbeat
WORKER = "vlmq:worker:{}"  # hash per worker name: model, state, revision, load seconds, pid, busy_since
SETUP_ERROR = "vlmq:setup-error:{}"  # string (JSON) per model: its workers' last setup failure (an hour)
REVISION = "vlmq:revision:{}"  # string per model: the weights revision its workers report
GROUP_WORKERS = "vlmq:group-workers:{}"  # sorted set per model group: group worker name -> last heartbeat
LOAD_LOCK = "vlmq:load-lock:{}"  # string per model: the group worker about to load it (NX, expires)
GROUP_USES = "vlmq:group-uses:{}"  # sorted set per model group: member -> its use score (fleet.py)
GROUP_CLOCK = "vlmq:group-clock:{}"  # string (counter) per model group: jobs its workers ran

# --- API keys (vlmq/keys.py)
KEY = "vlmq:key:{}"  # hash per sha256(key): id, name, rate, burst, webhook_secret, created_at
KEY_ID = "vlmq:keyid:{}"  # string per key id: the sha256 digest naming its KEY hash
BUCKET = "vlmq:bucket:{}"  # hash per key id: the token bucket (tokens, stamp)

# --- webhooks (vlmq/notify.py, tasks/webhooks.py, vlmq/webhook_secrets.py)
DELIVERIES = "vlmq:deliveries:{}"  # list per job id: JSON delivery attempts
ANONYMOUS_SECRET = "vlmq:webhook-secret:anonymous"  # string: the secret signing anonymous jobs' webhooks

# --- metrics (vlmq/metrics_store.py)
METRICS_PREFIX = "vlmq:metrics:"  # prefix of hashes per metric name: label fields -> value
FINISHED_METRIC = METRICS_PREFIX + "jobs_finished"  # hash: jobs_finished, counted by the Lua scripts

# --- answer cache (cache/exact.py, api/answers.py)
CACHE_PREFIX = "vlmq:cache:"  # prefix of every answer cache key
EXACT = CACHE_PREFIX + "x:{}:{}"  # string per scope digest and question digest: the job id (expires)
MODEL_INDEX = CACHE_PREFIX + "model:{}"  # sorted set per model: its EXACT keys -> when each expires
CACHE_REVISIONS = CACHE_PREFIX + "revision"  # hash: model -> the weights revision the cache last saw
GENERATION = CACHE_PREFIX + "generation:{}"  # string (counter) per model: bumped by a cache clear

# --- API (api/idempotency.py, api/routes/batches.py)
IDEM = "vlmq:idem:{}:{}"  # string per owner and sha256(Idempotency-Key): pending:<hash>, then job:<hash>:<id>
BATCH = "vlmq:batch:{}"  # hash per batch id: owner, created_at, jobs, errors (expires after job_ttl_s)

# --- the OpenAI-compatible Batch API (api/openai_files.py, api/openai_batches.py); they expire after
# openai_file_ttl_s
OAI_FILE = "vlmq:oai:file:{}"  # hash per file id: owner, purpose, filename, bytes, lines, created_at
OAI_FILES = "vlmq:oai:files:{}"  # sorted set per owner: file id -> created_at
OAI_BATCH = "vlmq:oai:batch:{}"  # hash per batch id: the batch object's fields, ingest progress
OAI_BATCHES = "vlmq:oai:batches:{}"  # sorted set per owner: batch id -> created_at
OAI_BATCH_JOBS = "vlmq:oai:batch-jobs:{}"  # list per batch id: "<job id> <custom_id>" per accepted line
OAI_BATCH_REFUSED = "vlmq:oai:batch-refused:{}"  # list per batch id: JSON per line refused at ingest
OAI_BATCH_COUNTS = "vlmq:oai:batch-counts:{}"  # hash per batch id: final status -> jobs (the Lua scripts)
OAI_ACTIVE = "vlmq:oai:active"  # set: batches not yet final (an API process drives each)
OAI_LEASE = "vlmq:oai:lease:{}"  # string per batch id: the API process driving it (NX, expires)

# --- worker locks (tasks/reconcile.py)
RECONCILE_LOCK = "vlmq:reconcile-lock:{}"  # string per model: one reconciler at a time (NX, expires)
BLOB_SWEEP_LOCK = "vlmq:blob-sweep-lock"  # string: one blob sweep at a time (NX, expires)
