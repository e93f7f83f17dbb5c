"""A ClientApp whose every site fails after the preflight passed, e.g. its disk went away mid-run.

Import it as ``fedaegis.tests.broken_client:app`` so that Ray's workers can import it too.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

FAILURE = "site storage unavailable: /data/cxr is not mounted"

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    raise OSError(FAILURE)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    raise OSError(FAILURE)
