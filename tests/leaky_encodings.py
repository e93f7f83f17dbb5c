"""A ClientApp that smuggles labels in the three encodings issue 13 found passing the audit.

It answers evaluation with fedaegis' own (honest, released) metrics plus the site's test labels
as per-sample keys (``sample-<i>-count``), written into one metric name, and packed into the low
bits of ``loss-sum``. Every name passes the old shape-of-name check; the reply schema refuses all
three. Import it as ``fedaegis.tests.leaky_encodings:app`` (Ray's workers import it too).
"""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedaegis.client import app as real
from fedaegis.client.site import site_data
from fedaegis.shared.reply.protocol import METRICS_KEY, request_config

app = ClientApp()  # no guard: nothing stops the leak at the site


@app.train()
def train(msg: Message, context: Context) -> Message:
    return real.app(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    honest = real.app(msg, context)
    metrics = dict(honest.content[METRICS_KEY])
    labels = site_data(request_config(msg.content)[0], context.node_config).test.labels.tolist()
    metrics.update({f"sample-{i}-count": int(y) for i, y in enumerate(labels[:100])})
    metrics[f"correct.{''.join(map(str, labels[:200]))}-count"] = 1
    metrics["loss-sum"] = float(metrics.get("loss-sum", 0.0)) + int("".join(map(str, labels[:52])), 2) / 2**60
    return Message(content=RecordDict({METRICS_KEY: MetricRecord(metrics)}), reply_to=msg)
