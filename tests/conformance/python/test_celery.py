"""Celery conformance: a real `celery worker` subprocess against the broker under test.

The worker (pool `solo`, its own uniquely named task queue, `conf_celery_app`) consumes tasks
over py-amqp/kombu; callers get results through Celery's `rpc://` result backend (a reply
queue per client), and reach the worker's remote-control mailbox (pidbox: a fanout exchange
and a queue with `x-message-ttl`/`x-expires`) with `control.ping`/`inspect`.

Patterns: work-queue (tasks executed, results returned), rpc (a task's exception travels
back to the caller), fanout (remote control broadcast and reply).

The worker runs for the whole module with a bounded lifetime (WORKER_LIFETIME, killed by a
timer if the tests hang) and is always terminated, then killed, at teardown. Readiness is
a completed task round trip, never a sleep.
"""
import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
HANG_GUARD = 30.0  # seconds for one result; never reached when the broker behaves
WORKER_LIFETIME = 180.0  # seconds; the worker is killed after this even if a test hangs


@pytest.fixture(scope="module")
def worker(amqp_url):
    """(app, task queue name, worker node name) with a worker consuming that queue."""
    from conf_celery_app import app

    app.conf.broker_url = amqp_url
    queue = f"conf.celery.tasks.{uuid.uuid4().hex[:12]}"
    node = f"conf-{uuid.uuid4().hex[:8]}@localhost"
    log = tempfile.NamedTemporaryFile(prefix="celery-worker-", suffix=".log", delete=False)
    env = {**os.environ, "AMQP_URL": amqp_url, "PYTHONPATH": str(HERE)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "conf_celery_app", "worker", "--pool=solo",
         "--concurrency=1", "--without-mingle", "--without-gossip", "--without-heartbeat",
         "--loglevel=INFO", "-Q", queue, "-n", node],
        cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    killer = threading.Timer(WORKER_LIFETIME, lambda: os.killpg(proc.pid, signal.SIGKILL))
    killer.start()
    try:
        # Readiness: the first task round trip (the task waits in its queue until then).
        from conf_celery_app import add
        try:
            assert add.apply_async((0, 0), queue=queue).get(timeout=HANG_GUARD) == 0
        except Exception:
            print(Path(log.name).read_text()[-4000:])
            raise
        yield app, queue, node
    finally:
        killer.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        app.close()
        log.close()
        os.unlink(log.name)


def test_work_queue_tasks_executed_and_results_returned(worker):
    from conf_celery_app import add

    _app, queue, _node = worker
    results = [add.apply_async((i, 10 * i), queue=queue) for i in range(10)]
    assert [r.get(timeout=HANG_GUARD) for r in results] == [11 * i for i in range(10)]
    assert all(r.state == "SUCCESS" for r in results)


def test_rpc_task_exception_returned_to_caller(worker):
    from conf_celery_app import fail

    _app, queue, _node = worker
    result = fail.apply_async(("boom",), queue=queue)
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=HANG_GUARD)
    assert result.state == "FAILURE"


def test_fanout_remote_control_ping_and_inspect(worker):
    app, queue, node = worker
    # Broadcast on the pidbox fanout exchange; the worker replies to our reply queue. With a
    # destination, ping returns as soon as that node has answered.
    assert app.control.ping(destination=[node], timeout=HANG_GUARD) == [{node: {"ok": "pong"}}]
    active = app.control.inspect(destination=[node], timeout=HANG_GUARD).active_queues()
    assert [q["name"] for q in active[node]] == [queue]
