"""One call to a management HTTP API (Lepus's or RabbitMQ's), shared by the suites that set up
or inspect the broker through it: the base address comes from MANAGEMENT_URL unless given."""
import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

HANG_GUARD_S = 30  # seconds; never reached when the broker behaves


def call(method, path, body=None, user="guest", password="guest", base_url=None):
    """`method` on `/api{path}` with basic auth: (HTTP status, decoded JSON body or None)."""
    status, _headers, decoded = exchange(method, path, body, user, password, base_url)
    return status, decoded


def exchange(method, path, body=None, user="guest", password="guest", base_url=None):
    """As `call`, with the response's headers: (status, headers, decoded JSON body or None)."""
    base = (base_url or os.environ["MANAGEMENT_URL"]).rstrip("/")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(f"{base}/api{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"authorization": f"Basic {token}",
                                          "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=HANG_GUARD_S) as resp:
            raw = resp.read()
            return resp.status, resp.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, e.headers, json.loads(raw) if raw else None
        except ValueError:
            return e.code, e.headers, None


def eventually(check, hang_guard_s=HANG_GUARD_S):
    """Polls `check` until it gives something truthy, and returns that. RabbitMQ publishes its
    statistics every few seconds and offers no event to wait on; Lepus answers the first time."""
    deadline = time.monotonic() + hang_guard_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "still not true after the hang guard"
        time.sleep(0.2)  # the polling interval: a statistics interval has no event to await


def quote(name):
    """A name as one path segment."""
    return urllib.parse.quote(name, safe="")
