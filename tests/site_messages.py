"""Drive a real ClientApp through Flower's Message API, the way a coordinator does.

The attacker controls everything in the request (run config, model weights); the site
controls its node config (its data and its policy file). Each call builds one request
exactly as the SuperLink would deliver it and returns the site's reply.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

from fedaegis.shared.run.config import RunConfig
from fedaegis.shared.models.tasks import build_task_model, model_meta

_ids = itertools.count(1)


def request(message_type: str, config: Mapping[str, Any], state: Mapping[str, torch.Tensor] | None = None,
            *, server_round: int = 1, run_id: int = 1) -> Message:
    """A train/evaluate request carrying ``config`` (run-config keys) and the model ``state``."""
    cfg = RunConfig.from_flower(dict(config))
    if state is None:
        torch.manual_seed(cfg.seed)
        state = build_task_model(model_meta(cfg)).state_dict()
    content = RecordDict({
        "arrays": ArrayRecord(state),
        "config": ConfigRecord({**{k: v for k, v in cfg.to_flower().items() if k not in ("db-url",)},
                                "server-round": server_round}),
    })
    metadata = Metadata(run_id=run_id, message_id=f"m{next(_ids)}", src_node_id=0, dst_node_id=7,
                        reply_to_message_id="", group_id=str(server_round), created_at=time.time(), ttl=3600,
                        message_type=message_type)
    return Message(metadata=metadata, content=content)


def site_context(node_config: Mapping[str, Any]) -> Context:
    return Context(run_id=1, node_id=7, node_config=dict(node_config), state=RecordDict(), run_config={})


def ask(app, message_type: str, config: Mapping[str, Any], node_config: Mapping[str, Any],
        state: Mapping[str, torch.Tensor] | None = None, **kw) -> Message:
    """Send one request to ``app`` (a ClientApp) at a site with ``node_config``; return its reply."""
    return app(request(message_type, config, state, **kw), site_context(node_config))
