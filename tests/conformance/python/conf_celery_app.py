"""The Celery application that test_celery.py runs in a worker subprocess.

Broker: `AMQP_URL` (py-amqp transport); results: the `rpc://` backend, which sends each
result as a message to the caller's reply queue. Not a test module itself.

AMQP heartbeats of 2 s keep the worker's event loop waking up, so that it acts on SIGTERM
within about a second (with none, it notices only after its 10 s poll timeout), and exercise
heartbeat negotiation and sending against the broker.
"""
import os

from celery import Celery

app = Celery("conf_celery_app", broker=os.environ.get("AMQP_URL"), backend="rpc://")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=False,
    broker_connection_max_retries=1,
    worker_hijack_root_logger=False,
    broker_heartbeat=2,
)


@app.task
def add(x, y):
    return x + y


@app.task
def fail(message):
    raise ValueError(message)
