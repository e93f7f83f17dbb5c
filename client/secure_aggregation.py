"""Secure aggregation at the site: the SecAgg+ state machine, and every check the site makes itself.

The server drives four steps (see :mod:`fedaegis.shared.reply.secagg`): ``keys`` and
``share`` and ``unmask`` are queries (:func:`answer_query`); the masked reply
rides on the train or evaluate message itself (:func:`secure_aggregation`, a
client mod, so it masks the reply exactly as it will be sent). Nothing the server
sends is taken on trust: the site's :class:`SecAggSettings` come from its own node
config, and the site refuses (an error reply naming the check) to

- sign keys for a context of another run, or one it has used before;
- go on with fewer peers or neighbours than its policy's ``secagg-min-sites``, with
  duplicate keys or signers, with its own keys missing or changed, with a key list
  other than its neighbours' (it derives them itself), or with keys not signed by a
  member of the consortium's roster (the server cannot slip in its own key);
- mask two replies under one key exchange (two models, one set of masks);
- unmask before it has sent its own masked reply, more than once, with itself
  listed as dropped, with a peer both surviving and dropped, or with fewer
  surviving holders than the threshold.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt
from flwr.common.secure_aggregation.secaggplus_utils import (
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)
from flwr.supercore.primitives.asymmetric import sign_message, verify_signature

from ..shared.reply import secagg
from ..shared.run.config import fedaegis_home
from ..shared.reply.protocol import ARRAYS_KEY, METRICS_KEY, SECAGG_KEY

SECAGG_STATE = "fedaegis.secagg"
SECAGG_REFUSED = 7302  # error code of a refused secure-aggregation step
KEYS_DIR_ENV = "FEDAEGIS_SECAGG_KEYS"  # simulated sites' keys (default $FEDAEGIS_HOME/simulation-keys)


@dataclass(frozen=True)
class SecAggSettings:
    """What this site demands of secure aggregation; read from its node config, never from the server.

    Node config: ``secagg-signing-key`` (the SuperNode's authentication key, OpenSSH or
    PEM), ``secagg-roster`` (the consortium's public keys: the SuperNodes' ``.pub`` lines),
    ``secagg-min-sites`` (default 3), ``secagg-allow-unsigned`` (default false: without a
    signing key the site refuses), ``secagg-require-train`` (refuse unmasked training
    replies). A simulated site finds its consortium's keys in ``$FEDAEGIS_HOME/simulation-keys``.
    """

    min_sites: int = 3
    signing_key: ec.EllipticCurvePrivateKey | None = None
    roster: dict[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)
    allow_unsigned: bool = False
    require_train: bool = False

    @classmethod
    def from_node_config(cls, node_config: dict[str, Any]) -> SecAggSettings:
        key, roster = node_config.get("secagg-signing-key"), node_config.get("secagg-roster")
        sim = Path(os.environ.get(KEYS_DIR_ENV) or fedaegis_home() / "simulation-keys")
        own = sim / f"site-{int(node_config['partition-id'])}.key" if "partition-id" in node_config else None
        if key is None and own is not None and own.is_file():  # a simulated site with its key
            key, roster = str(own), roster or str(sim)
        return cls(
            min_sites=int(node_config.get("secagg-min-sites", 3)),
            signing_key=_load_key(str(key)) if key else None,
            roster=_load_roster(str(roster), os.stat(roster).st_mtime_ns) if roster else {},
            allow_unsigned=_flag(node_config.get("secagg-allow-unsigned", False)),
            require_train=_flag(node_config.get("secagg-require-train", False)) or _policy_requires_train(node_config),
        )


def _policy_requires_train(node_config: dict[str, Any]) -> bool:
    """The hospital's site policy (:mod:`fedaegis.shared.site.policy`) says ``[updates] mode = "secure-aggregation"``."""
    from ..shared.site.policy import site_policy

    return site_policy(node_config).updates_mode == "secure-aggregation"


def requires_secure_training(node_config: dict[str, Any]) -> bool:
    """Whether this site demands secure aggregation of its training updates (hook for the site policy)."""
    return SecAggSettings.from_node_config(node_config).require_train


def _flag(value: object) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")


@lru_cache(maxsize=1024)  # one per simulated site in this process (one at a real SuperNode)
def _load_key(path: str) -> ec.EllipticCurvePrivateKey:
    return secagg.load_private_key(Path(path).read_bytes())


@lru_cache(maxsize=8)
def _load_roster(path: str, _mtime: int) -> dict[str, ec.EllipticCurvePublicKey]:
    return secagg.read_roster(Path(path))


# ---------------------------------------------------------------- state (site-local, JSON in Context.state)
def _load(context: Context) -> dict[str, Any]:
    if SECAGG_STATE not in context.state:
        return {"used": []}
    return json.loads(str(context.state[SECAGG_STATE]["json"]))


def _save(context: Context, state: dict[str, Any]) -> None:
    context.state[SECAGG_STATE] = ConfigRecord({"json": json.dumps(state)})


def _refuse(msg: Message, why: str) -> Message:
    return Message(Error(code=SECAGG_REFUSED, reason="secure aggregation refused: " + why), reply_to=msg)


def _check(ok: bool, why: str) -> None:
    if not ok:
        raise secagg.SecAggRefused(why)


# ---------------------------------------------------------------- the steps
def answer_query(msg: Message, context: Context) -> Message:
    """The server's secure-aggregation queries: ``keys``, ``share`` or ``unmask``."""
    config = msg.content["config"]
    policy = SecAggSettings.from_node_config(dict(context.node_config))
    state = _load(context)
    step = {"keys": _keys, "share": _share, "unmask": _unmask}.get(str(config.get("secagg-stage")))
    if step is None:
        return _refuse(msg, f"unknown stage {config.get('secagg-stage')!r}")
    try:
        record = step(dict(config), state, policy, context)
    except secagg.SecAggRefused as exc:
        return _refuse(msg, str(exc))
    finally:
        _save(context, state)
    return Message(RecordDict({SECAGG_KEY: ConfigRecord(record)}), reply_to=msg)


def _keys(config: dict, state: dict, policy: SecAggSettings, context: Context) -> dict:
    ctx = str(config.get("secagg-context", ""))
    _check(ctx.startswith(f"{context.run_id}/"), f"context {ctx!r} is not of this run ({context.run_id})")
    _check(ctx not in state["used"], f"context {ctx!r} was used before")
    _check(policy.signing_key is not None or policy.allow_unsigned,
           "this site has no signing key and does not allow unsigned keys (node config secagg-signing-key)")
    state["used"].append(ctx)
    seed1 = os.urandom(secagg.SECRET_BYTES)  # the mask key's seed: what is Shamir-shared
    (sk1, pk1b), (sk2, pk2b) = secagg.seeded_keypair(seed1), secagg.new_keypair()  # masks; share encryption
    state["session"] = {"context": ctx, "stage": "keys", "seed1": seed1.hex(), "sk1": sk1.hex(), "sk2": sk2.hex(),
                        "pk1": pk1b.hex(), "pk2": pk2b.hex()}
    record: dict[str, Any] = {"pk1": pk1b, "pk2": pk2b}
    if policy.signing_key is not None:
        record["signature"] = sign_message(policy.signing_key, secagg.key_payload(ctx, context.node_id, pk1b, pk2b))
        record["signer"] = secagg.fingerprint(policy.signing_key.public_key())
    return record


def _session(config: dict, state: dict, stage: str) -> dict:
    s = state.get("session")
    _check(s is not None and s["context"] == str(config.get("secagg-context")), "no key exchange for this context")
    _check(s["stage"] == stage, f"step out of order: this exchange is at {s['stage']!r}, not {stage!r}")
    return s


def _share(config: dict, state: dict, policy: SecAggSettings, context: Context) -> dict:
    s = _session(config, state, "keys")
    me, ctx = context.node_id, s["context"]
    all_nodes = [int(n) for n in config["secagg-nodes"]]  # everyone: the site derives its neighbours
    nodes = [int(n) for n in config["secagg-key-nodes"]]  # itself and its neighbours, with their keys
    pk1s, pk2s = list(config["secagg-pk1"]), list(config["secagg-pk2"])
    _check(len(all_nodes) == len(set(all_nodes)), "the peer list repeats a node")
    _check(len(nodes) == len(set(nodes)) == len(pk1s) == len(pk2s), "the key list repeats a node or is ragged")
    _check(len(set(pk1s) | set(pk2s)) == 2 * len(nodes), "two peers share a public key")
    _check(me in nodes and me in all_nodes, "this site's own keys are missing from the peer list")
    i = nodes.index(me)
    _check(pk1s[i].hex() == s["pk1"] and pk2s[i].hex() == s["pk2"], "this site's own keys were changed")
    _check(len(all_nodes) >= policy.min_sites,
           f"{len(all_nodes)} sites in the aggregate, this site requires {policy.min_sites}")
    k = int(config.get("secagg-neighbours", secagg.DEFAULT_NEIGHBOURS))
    near = secagg.neighbours(all_nodes, ctx, k)[me]
    _check(sorted(nodes) == sorted([me, *near]), "the key list is not this site's neighbours")
    if policy.roster or not policy.allow_unsigned:  # every key it will use, signed by a consortium member
        _check(bool(policy.roster), "this site has no roster of the consortium's keys (node config secagg-roster)")
        sigs, signers = list(config.get("secagg-signatures", [])), [str(x) for x in config.get("secagg-signers", [])]
        _check(len(sigs) == len(signers) == len(nodes), "the peers' keys are not all signed")
        _check(len(set(signers)) == len(signers), "two peers' keys are signed by the same member")
        for node, pk1, pk2, sig, signer in zip(nodes, pk1s, pk2s, sigs, signers):
            if node == me and policy.signing_key is not None:  # its own keys are checked above: its signer only
                _check(signer == secagg.fingerprint(policy.signing_key.public_key()) and signer in policy.roster,
                       "this site's keys are listed under another signer, or its own is not in the roster")
                continue
            key = policy.roster.get(signer)
            _check(key is not None, f"node {node}'s keys are signed by a key outside the consortium's roster")
            _check(verify_signature(key, secagg.key_payload(ctx, node, pk1, pk2), sig),
                   f"node {node}'s keys do not match their signature")
    holders = len(near) + 1
    _check(holders >= policy.min_sites, f"{len(near)} neighbours, this site requires {policy.min_sites - 1}")
    t = secagg.threshold(holders)
    b = os.urandom(secagg.SECRET_BYTES)  # the self-mask seed: one Shamir chunk, like the mask key's seed
    b_shares = secagg.create_shares(b, t, holders)
    sk_shares = secagg.create_shares(bytes.fromhex(s.pop("seed1")), t, holders)
    # one key per neighbour encrypts the shares sent to it and decrypts those it sends back
    keys = secagg.pair_seeds(bytes.fromhex(s["sk2"]), {j: pk2s[nodes.index(j)] for j in near})
    dst, cts = [], []
    for idx, j in enumerate(near, start=1):
        dst.append(j)
        cts.append(encrypt(keys[j], share_keys_plaintext_concat(me, j, b_shares[idx], sk_shares[idx])))
    s.update(stage="shared", b=b.hex(), t=t, near=near,
             pk1_peers={str(j): pk1s[nodes.index(j)].hex() for j in near},
             share_keys={str(j): keys[j].decode() for j in near},
             held={str(me): [b_shares[0].hex(), sk_shares[0].hex()]})
    return {"dst": dst, "ciphertexts": cts}


def _receive_shares(config: dict, s: dict, me: int) -> list[int]:
    """Decrypt the shares the neighbours sent this site; returns who sent one."""
    received = []
    for src, ct in zip(config.get("secagg-src", []), config.get("secagg-ciphertexts", [])):
        src = int(src)
        _check(str(src) in s["share_keys"] and src not in received, f"shares from node {src}, not a neighbour")
        key = s["share_keys"][str(src)].encode()
        try:
            actual, dst, b_share, sk_share = share_keys_plaintext_separate(decrypt(key, ct))
        except Exception as exc:  # a forged or altered ciphertext
            raise secagg.SecAggRefused(f"shares from node {src} do not decrypt") from exc
        _check(actual == src and dst == me, f"shares from node {src} name {actual} -> {dst}")
        s["held"][str(src)] = [b_share.hex(), sk_share.hex()]
        received.append(src)
    _check(len(received) + 1 >= s["t"], f"{len(received)} neighbours sent shares; the threshold is {s['t']}")
    return received


def _unmask(config: dict, state: dict, policy: SecAggSettings, context: Context) -> dict:
    s = _session(config, state, "submitted")
    s["stage"] = "unmasked"  # one answer per context, whatever happens next
    me = context.node_id
    survivors = [int(n) for n in config["secagg-survivors"]]
    dropped = [int(n) for n in config["secagg-dropped"]]
    _check(me not in dropped, "this site is listed as dropped: it never reveals its own key")
    _check(me in survivors, "this site is missing from the survivors")
    _check(not set(survivors) & set(dropped), "a peer is listed both as surviving and as dropped")
    _check(len(set(survivors)) >= policy.min_sites, f"{len(set(survivors))} survivors, this site requires {policy.min_sites}")
    holders = {me, *s["received"]}
    _check(len(holders & set(survivors)) >= s["t"],
           f"{len(holders & set(survivors))} surviving share holders, fewer than the threshold {s['t']}")
    b_nodes = [n for n in survivors if str(n) in s["held"]]
    sk_nodes = [n for n in dropped if str(n) in s["held"] and n != me]
    record = {"b-nodes": b_nodes, "b-shares": [bytes.fromhex(s["held"][str(n)][0]) for n in b_nodes],
              "sk-nodes": sk_nodes, "sk-shares": [bytes.fromhex(s["held"][str(n)][1]) for n in sk_nodes]}
    s["held"] = {}
    return record


def secure_aggregation(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Mask a train or evaluate reply under the key exchange the server named (a client mod)."""
    config = msg.content["config"] if "config" in msg.content else None
    kind = msg.metadata.message_type
    secure = config is not None and "secagg-context" in config
    if kind == MessageType.TRAIN and not secure and SecAggSettings.from_node_config(dict(context.node_config)).require_train:
        return _refuse(msg, "this site sends training updates only under secure aggregation (secagg-require-train)")
    if kind not in (MessageType.TRAIN, MessageType.EVALUATE) or not secure:
        return call_next(msg, context)
    state = _load(context)
    try:
        s = _session(dict(config), state, "shared")  # a second reply under one exchange is refused here
        s["stage"] = "submitted"
        s["received"] = _receive_shares(dict(config), s, context.node_id)
    except secagg.SecAggRefused as exc:
        _save(context, state)
        return _refuse(msg, str(exc))
    _save(context, state)
    reply = call_next(msg, context)
    if reply.has_error() or METRICS_KEY not in reply.content:
        return reply
    metrics = dict(reply.content[METRICS_KEY])
    names = sorted(metrics)
    parts = [np.array([float(metrics[n]) for n in names])]
    arrays = reply.content[ARRAYS_KEY] if kind == MessageType.TRAIN and ARRAYS_KEY in reply.content else None
    if arrays is not None:  # n * w: the server divides the sum by the summed n (FedAvg)
        n = float(metrics["num-examples"])
        parts += [arrays[k].numpy().astype(np.float64).ravel() * n for k in sorted(arrays.keys())]
    vector = np.concatenate(parts)
    me, ctx = context.node_id, s["context"]
    sk1 = bytes.fromhex(s["sk1"])
    peers = {j: bytes.fromhex(s["pk1_peers"][str(j)]) for j in s["received"]}
    masked = secagg.add(secagg.add(secagg.encode(vector), secagg.prg(bytes.fromhex(s["b"]), ctx, vector.size)),
                        secagg.pairwise_masks(sk1, me, peers, ctx, vector.size))
    s["sk1"], s["b"], s["share_keys"] = "", "", {}  # single use: nothing left to mask a second reply with
    _save(context, state)
    reply.content[METRICS_KEY] = MetricRecord({secagg.PREFIX + n: int(v) for n, v in zip(names, masked[:len(names)])})
    if arrays is not None:
        out, pos = {}, len(names)
        for k in sorted(arrays.keys()):
            shape = tuple(arrays[k].shape)
            size = int(np.prod(shape)) if shape else 1
            out[k] = masked[pos:pos + size].reshape(shape)
            pos += size
        reply.content[ARRAYS_KEY] = ArrayRecord({k: Array(out[k]) for k in arrays.keys()})
    return reply
