"""Live events over SSE: status changes and streamed text, resumable with Last-Event-ID."""

from __future__ import annotations

from tests.utils.images import cat, data_uri
from tests.utils.jobs import submit, wait
from tests.utils.slow_model import SLOW_MODEL
from vlmq.client import Client


def test_stream_with_a_reconnect_misses_nothing(stack) -> None:
    with stack.client() as api, Client(stack.url) as client:
        job = submit(api, {"type": "caption", "model": SLOW_MODEL, "image_url": data_uri(cat()),
                           "max_new_tokens": 40, "cache": False}).json()
        first = []
        for event in client.stream(job["id"]):
            first.append(event)
            if sum(e.event == "text" for e in first) == 3:
                break  # the connection is dropped mid-generation
        rest = list(client.stream(job["id"], last_event_id=first[-1].id))
        events = first + rest
        ids = [e.id for e in events]
        assert len(ids) == len(set(ids))  # no duplicate across the reconnect
        replay = list(client.stream(job["id"]))  # a finished job's stream replays from the start
        assert [e.id for e in replay] == ids  # ... and equals what the two connections saw: no gap
        assert events[0].event == "queued" and events[-1].event == "succeeded"
        text = "".join(e.data["text"] for e in events if e.event == "text")
        final = wait(api, job["id"])
        assert text.strip() == final["output"]["text"] and len(text.split()) >= 20


def test_unknown_job_stream_is_404(stack) -> None:
    with stack.client() as api:
        response = api.get("/v1/jobs/nope/events")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


# --- a browser's EventSource across its reconnect ---------------------------------------------------

PAGE = "<!doctype html><title>sse</title>"
LISTEN = """(url) => {
  window.sse = {events: [], opens: 0, errors: 0, state: 0};
  const source = new EventSource(url);
  source.onopen = () => { window.sse.opens += 1; };
  source.onerror = () => { window.sse.errors += 1; window.sse.state = source.readyState; };
  for (const name of ["queued", "running", "text", "succeeded", "failed", "canceled", "aborted"]) {
    source.addEventListener(name, (e) => window.sse.events.push([name, e.lastEventId]));
  }
}"""


def _browser_stream(browser, api_url: str, job_id: str) -> dict:
    """What a page's EventSource saw of the job's stream until it gave up reconnecting (CLOSED)."""
    page = browser.new_page()
    try:
        # a page on the API's own origin (EventSource is same-origin here: the API sends no CORS headers)
        page.route(f"{api_url}/__sse__", lambda route: route.fulfill(body=PAGE, content_type="text/html"))
        page.goto(f"{api_url}/__sse__")
        page.evaluate(LISTEN, f"/v1/jobs/{job_id}/events")
        page.wait_for_function("window.sse.state === EventSource.CLOSED", timeout=30_000)
        return page.evaluate("window.sse")
    finally:
        page.close()


def test_a_browser_eventsource_closes_after_the_end_and_its_reconnect(stack) -> None:
    from tests.utils.browser import chromium

    with stack.client() as api, chromium() as browser:
        job = submit(api, {"type": "caption", "model": SLOW_MODEL, "image_url": data_uri(cat()),
                           "max_new_tokens": 12, "cache": False}).json()
        live = _browser_stream(browser, stack.url, job["id"])  # subscribed while queued or running
        final = wait(api, job["id"])
        replayed = _browser_stream(browser, stack.url, job["id"])  # subscribed after the end

        for seen in (live, replayed):
            ids = [event_id for _name, event_id in seen["events"]]
            assert len(ids) == len(set(ids)), seen  # the reconnect replayed nothing twice
            assert seen["events"][0][0] == "queued" and seen["events"][-1][0] == final["status"] == "succeeded"
            # one stream, then the reconnect with Last-Event-ID = the final event: 204, and EventSource stops
            assert seen["opens"] == 1 and seen["errors"] == 2, seen
        assert [e[1] for e in replayed["events"]] == [e[1] for e in live["events"]]

        last = live["events"][-1][1]
        assert api.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": last}).status_code == 204
        later = last.split("-")[0] + "-99"
        assert api.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": later}).status_code == 204
        # an id that is not a stream id replays from the start (documented)
        garbage = api.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "not-an-id"})
        assert garbage.status_code == 200 and garbage.text.count("event: ") == len(live["events"])
