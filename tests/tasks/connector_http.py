"""HTTP job tasks for the connector tests: a job of examples/mltrain_service.py at TRAIN_URL,
with the bearer token from the Secret TRAIN_TOKEN."""

import os

import engine
from engine.io import File
from providers.connectors import HTTPJobTask

train = HTTPJobTask(
    name="http_train", url=os.environ.get("TRAIN_URL", "http://127.0.0.1:9"),
    inputs={"dataset_uri": (str, "mem://data"), "epochs": (int, 1), "seconds": (float, 0.0), "fail": (bool, False),
            "flaky_gets": (int, 0)},
    outputs={"results": File}, token=engine.Secret(key="TRAIN_TOKEN"),
    timeout=float(os.environ.get("TRAIN_TIMEOUT", "60")), poll_interval=0.2)
