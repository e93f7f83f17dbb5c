"""Model replacement (Bagdasaryan et al., AISTATS 2020): scale a malicious update to survive averaging.

FedAvg moves the global model by the mean of the n sites' updates, so one honest-looking
update is diluted n-fold. An attacker that sends w_global + boost * (w_local - w_global)
with boost = n / m (m colluding malicious sites; divide further by the server learning
rate if it is not 1) makes the average land on its own model once the benign updates
have nearly converged. Norm bounding and robust aggregation are the defences.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def replacement_boost(num_sites: int, num_malicious: int = 1, server_lr: float = 1.0) -> float:
    """The scale that replaces the global model: n / (m * eta).

    With sample-weighted FedAvg use total examples / malicious examples as ``num_sites /
    num_malicious`` instead: the weights, not the head count, decide the dilution.
    """
    if num_malicious < 1 or num_sites < num_malicious:
        raise ValueError(f"need 1 <= num_malicious <= num_sites, got {num_malicious} of {num_sites}")
    if server_lr <= 0:
        raise ValueError(f"server_lr: must be > 0, got {server_lr}")
    return num_sites / (num_malicious * server_lr)


def boost_update(
    global_state: Mapping[str, torch.Tensor], local_state: Mapping[str, torch.Tensor], boost: float
) -> dict[str, torch.Tensor]:
    """w_sent = w_global + boost * (w_local - w_global) for every float tensor.

    Integer buffers (BatchNorm's batch counters) are sent as trained: scaling a counter is
    meaningless and would only make the update conspicuous.
    """
    if set(global_state) != set(local_state):
        raise ValueError("global and local models have different keys")
    return {
        k: global_state[k] + boost * (v - global_state[k]) if v.is_floating_point() else v.clone()
        for k, v in local_state.items()
    }
