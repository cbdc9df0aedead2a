"""Fan-out jobs, modelled on Celery canvas's `group`: a parent that owns one child job per branch.

A job type with `fan_out=True` (compare) has params that are `FanOutParams`: `branches()` gives each
child's model and params. Everything about the shape lives here and in the one Lua function that
settles a parent (`SETTLE_PARENT`, run inside the store's scripts):

* submit (api/submit.py): the parent record (no model, `children` = branch model -> child id) and
  one child record per branch, each on its own model's queue, admitted in one script; the children
  share the parent's image, deleted when the parent ends;
* a child ends (any way: result, cancel, deadline, claim): its outcome (`status`, `job_id`, `output`
  or `error`) is written once on the parent as `outcome:<model>`, a `partial` event is sent, and the
  last one settles the parent: `succeeded` when any branch succeeded, else `failed`
  (`all_models_failed`); one failing branch never fails the others;
* the parent's output (`parent_output`) is every branch's outcome, `queued` for those not in yet;
* a cancel of the parent cancels its children (api/routes/jobs.py).
"""

from __future__ import annotations

from typing import Any

from vlmq.jobs import JobRecord, JobStatus
from vlmq.keyspace import JOB


def parent_output(record: JobRecord) -> dict[str, Any]:
    """A fan-out job's output: each branch's outcome, in branch order (`queued` until it is in)."""
    results = {}
    for model, child in record.children.items():
        results[model] = record.outcomes.get(model) or {"status": JobStatus.queued.value, "job_id": child}
    return {"results": results}


#: The Lua function the store's finish and end scripts call when a child ended (it uses their
#: `event` and `count_final`): the outcome recorded once on the parent, a `partial` event, and the
#: last child settles the parent (succeeded when any branch did). Returns the parent's status.
SETTLE_PARENT = f"""
-- A fan-out's child ended: its outcome recorded once; the last one settles the parent.
local function settle_parent(parent, model, outcome, now)
  local key = '{JOB.format("")}' .. parent
  redis.call('HSETNX', key, 'outcome:' .. model, outcome)
  local st = redis.call('HGET', key, 'status')
  if not st or (st ~= 'queued' and st ~= 'running') then return st or '' end
  local children = cjson.decode(redis.call('HGET', key, 'children'))
  local total, done, ok = 0, 0, 0
  for name, _ in pairs(children) do
    total = total + 1
    local found = redis.call('HGET', key, 'outcome:' .. name)
    if found then
      done = done + 1
      if cjson.decode(found).status == 'succeeded' then ok = ok + 1 end
    end
  end
  if st == 'queued' then
    redis.call('HSET', key, 'status', 'running', 'started_at', now)
    event(parent, 'running', '{{"status":"running"}}')
  end
  event(parent, 'partial', cjson.encode({{model=model, outcome=cjson.decode(outcome)}}))
  if done < total then return 'running' end
  local final = 'succeeded'
  if ok == 0 then final = 'failed' end
  redis.call('HSET', key, 'status', final, 'completed_at', now)
  count_final(key, final)
  if ok == 0 then
    redis.call('HSET', key, 'error', cjson.encode({{code='all_models_failed', message='every model failed'}}))
  end
  event(parent, final, cjson.encode({{status=final}}))
  return final
end
"""
