"""A deliberately leaky ClientApp, for ``fedaegis audit`` to catch.

It trains exactly like fedaegis' own ClientApp, but it has no ``protocol_guard`` mod and its
evaluate reply carries the per-sample predictions on the site's test images as a list
(``"predictions": [...]``): the kind of bug that would put patient-level values on the wire.

Import it as ``fedaegis.tests.leaky_client:app`` (the repository root is the ``fedaegis``
package), so that Ray's workers can import it too.
"""

from __future__ import annotations

import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedaegis.client import app as real
from fedaegis.client.site import site_data
from fedaegis.shared.training import evaluate_local
from fedaegis.shared.reply.protocol import METRICS_KEY

LEAKY_METRIC = "predictions"

app = ClientApp()  # no mods: nothing stops the leak at the site


@app.train()
def train(msg: Message, context: Context) -> Message:
    return real.app(msg, context)  # fedaegis' own site, mods included: its training replies are clean


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg, model, *_ = real._setup(msg, context)
    data = site_data(cfg, context.node_config)
    metrics: dict = evaluate_local(model, data.test)
    with torch.no_grad():
        model.eval()
        predictions = model(data.test.images[:64]).argmax(1).tolist()
    metrics[LEAKY_METRIC] = predictions  # per-sample values: a protocol violation
    return Message(content=RecordDict({METRICS_KEY: MetricRecord(metrics)}), reply_to=msg)
