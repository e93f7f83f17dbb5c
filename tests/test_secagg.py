"""SecAgg+ against a curious coordinator: exact sums, dropouts, and every unmasking attack refused.

The sites run the real site code (``client/secure_aggregation.py``) with their own keys
and roster; the honest server is the real ``SecureAggregation`` strategy; the attacks
replay what a coordinator who runs the server could send instead.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Message, MessageType
from flwr.supercore.primitives.asymmetric import generate_key_pairs, sign_message
from flwr.supercore.task_identity import TaskIdentity

from fedaegis.server.secure_evaluation import SecureAggregation
from fedaegis.shared.reply import secagg
from fedaegis.shared.run.config import ConfigError, RunConfig

from secagg_fixtures import RUN, LocalGrid, planned, query, refused

SITES = {11: {"num-examples": 10, "correct": 7, "loss-sum": 3.25},
         22: {"num-examples": 20, "correct": 11, "loss-sum": 8.5},
         33: {"num-examples": 5, "correct": 5, "loss-sum": 0.125},
         44: {"num-examples": 14, "correct": 9, "loss-sum": 4.0},
         55: {"num-examples": 8, "correct": 2, "loss-sum": 6.75}}
VICTIM = 33


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    """Messages are built outside a Flower process here: give them a run and task id."""
    monkeypatch.setattr(TaskIdentity, "_run_id", RUN)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _total(nodes) -> dict[str, float]:
    nodes = list(nodes)
    return {k: float(sum(SITES[n][k] for n in nodes)) for k in SITES[11]}


def _evaluate(grid: LocalGrid, strategy: SecureAggregation, context: str = f"{RUN}/1/evaluate"):
    msgs = strategy._setup(grid, planned(sorted(grid.sites), MessageType.EVALUATE), context, MessageType.EVALUATE)
    return msgs, grid.send_and_receive(msgs)


def test_exact_sum_and_nothing_recognisable_per_site(tmp_path):
    grid = LocalGrid(tmp_path, SITES)
    strategy = SecureAggregation(None, evaluate=True)
    _, replies = _evaluate(grid, strategy)
    for r in replies:  # each reply: integers mod 2**62 under secagg.* names, none equal to the plain value
        node = r.metadata.src_node_id
        assert sorted(r.content["metrics"]) == sorted(secagg.PREFIX + k for k in SITES[node])
        plain = secagg.encode(np.array([SITES[node][k] for k in sorted(SITES[node])]))
        assert all(int(v) != int(p) for v, p in zip(dict(sorted(r.content["metrics"].items())).values(), plain))
    totals, _ = strategy._reveal(1, replies)
    assert totals == _total(SITES)


def test_one_of_five_dying_after_the_key_exchange_still_gives_the_exact_sum(tmp_path):
    grid = LocalGrid(tmp_path, SITES)
    grid.die_on[VICTIM] = MessageType.EVALUATE  # it shared its keys, then died
    strategy = SecureAggregation(None, evaluate=True)
    _, replies = _evaluate(grid, strategy)
    assert len(replies) == 4
    totals, _ = strategy._reveal(1, replies)
    assert totals == _total(n for n in SITES if n != VICTIM)


def test_sparse_neighbour_graph_gives_the_exact_sum(tmp_path):
    values = {n: {"num-examples": n, "correct": n % 7} for n in range(101, 113)}
    grid = LocalGrid(tmp_path, values)
    grid.die_on[105] = MessageType.EVALUATE
    strategy = SecureAggregation(None, evaluate=True, neighbours=4)
    _, replies = _evaluate(grid, strategy)
    totals, _ = strategy._reveal(1, replies)
    assert totals == {"num-examples": float(sum(n for n in values if n != 105)),
                      "correct": float(sum(n % 7 for n in values if n != 105))}


def test_training_updates_average_exactly_within_quantisation(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {n: {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
              for n in SITES}
    grid = LocalGrid(tmp_path, {n: {"num-examples": v["num-examples"], "train-loss-sum": v["loss-sum"]}
                                for n, v in SITES.items()}, arrays)
    strategy = SecureAggregation(None, train=True, evaluate=False)
    global_model = {"w": np.zeros((3, 4), np.float32), "b": np.zeros(4, np.float32)}
    strategy._global = planned([0], MessageType.TRAIN, arrays=global_model)[0].content["arrays"]
    msgs = strategy._setup(grid, planned(sorted(SITES), MessageType.TRAIN, arrays=global_model),
                           f"{RUN}/1/train", MessageType.TRAIN)
    replies = grid.send_and_receive(msgs)
    for r in replies:  # the update left the site masked: same keys and shapes, no float in sight
        assert r.content["arrays"]["w"].numpy().dtype == np.uint64
    new, metrics = strategy.aggregate_train(1, replies)
    n = sum(v["num-examples"] for v in SITES.values())
    for k in ("w", "b"):
        want = sum(SITES[s]["num-examples"] * arrays[s][k].astype(np.float64) for s in SITES) / n
        np.testing.assert_allclose(new[k].numpy(), want, atol=1e-5)
    assert metrics["num-examples"] == n and metrics["train-loss"] == pytest.approx(
        sum(v["loss-sum"] for v in SITES.values()) / n)


def test_robust_aggregators_and_server_clipping_are_refused_with_secure_training():
    for rule in ("krum", "multikrum", "bulyan", "fedmedian", "fedtrimmedavg"):
        with pytest.raises(ConfigError, match="'secure-aggregation-train'.*needs each site's own update"):
            RunConfig.from_flower({"secure-aggregation-train": True, "aggregation": rule, "min-sites": 7})
    with pytest.raises(ConfigError, match="'secure-aggregation-train'.*clip-norm"):
        RunConfig.from_flower({"secure-aggregation-train": True, "clip-norm": 1.0})


# ---------------------------------------------------------------- a curious coordinator
def _rebuild_attempt(shares, node_near: int) -> bytes | None:
    try:
        return secagg.rebuild(shares, secagg.threshold(node_near + 1))
    except ValueError:
        return None


def _unmask_all(grid, strategy, survivors, dropped, ask=None):
    """Ask every site in ``ask`` to unmask; the shares the server collects, per node and kind."""
    ex = strategy._exchange
    b, sk, replies = {}, {}, {}
    for node in ask or survivors:
        r = query(grid, node, {"secagg-stage": "unmask", "secagg-context": ex.context,
                               "secagg-survivors": survivors, "secagg-dropped": dropped})
        replies[node] = r
        if not r.has_error():
            rec = r.content["secagg"]
            for n, s in zip(rec["b-nodes"], rec["b-shares"]):
                b.setdefault(n, []).append(s)
            for n, s in zip(rec["sk-nodes"], rec["sk-shares"]):
                sk.setdefault(n, []).append(s)
    return b, sk, replies


def _strip_pairwise(strategy, masked: Message, victim: int, sk: bytes) -> dict[str, float]:
    """What the server gets from the victim's masked reply once it knows the victim's mask key."""
    ex = strategy._exchange
    names = sorted(masked.content["metrics"])
    y = np.array([int(masked.content["metrics"][n]) for n in names], dtype=np.uint64)
    for peer in ex.received[victim]:
        m = secagg.prg(secagg.pair_seed(sk, ex.pk1[peer]), ex.context, y.size)
        y = secagg.sub(y, m) if victim < peer else secagg.add(y, m)
    return dict(zip((n.removeprefix(secagg.PREFIX) for n in names), secagg.decode(y)))


@pytest.mark.parametrize("late", [False, True], ids=["declared-dropped-after-arrival", "late-reply"])
def test_declaring_a_received_or_late_site_dropped_reveals_nothing(tmp_path, late):
    grid = LocalGrid(tmp_path, SITES)
    strategy = SecureAggregation(None, evaluate=True)
    if late:
        grid.hold.add(VICTIM)  # its reply is slow: it arrives after the others have unmasked
    _, replies = _evaluate(grid, strategy)
    others = sorted(n for n in SITES if n != VICTIM)
    victim_reply = grid.held[0] if late else next(r for r in replies if r.metadata.src_node_id == VICTIM)
    # The coordinator tells the others the victim dropped: they hand over shares of its mask key ...
    b, sk, _ = _unmask_all(grid, strategy, others, [VICTIM])
    near = len(strategy._exchange.near[VICTIM])
    seed = _rebuild_attempt(sk[VICTIM], near)
    assert seed is not None
    key = secagg.seeded_keypair(seed)[0]  # the mask key derived from its rebuilt seed
    # ... which strips its pairwise masks, but its self-mask remains: the value is noise.
    leaked = _strip_pairwise(strategy, victim_reply, VICTIM, key)
    assert leaked != {k: float(v) for k, v in SITES[VICTIM].items()}
    assert all(abs(leaked[k] - SITES[VICTIM][k]) > 1e3 for k in SITES[VICTIM])
    # The self-mask seed: each holder answers one unmask request per exchange, so asking
    # again (now calling the victim a survivor) is refused, and the victim alone holds one share.
    b2, _, second = _unmask_all(grid, strategy, sorted(SITES), [], ask=sorted(SITES))
    assert all(refused(second[n], "step out of order") for n in others)
    assert not second[VICTIM].has_error() and len(b2.get(VICTIM, [])) == 1
    assert VICTIM not in b and _rebuild_attempt(b2[VICTIM], near) is None


def test_a_site_never_unmasks_itself_or_a_lone_survivor_list(tmp_path):
    grid = LocalGrid(tmp_path, SITES)
    strategy = SecureAggregation(None, evaluate=True)
    _evaluate(grid, strategy)
    ctx = strategy._exchange.context
    others = sorted(n for n in SITES if n != VICTIM)
    r = query(grid, VICTIM, {"secagg-stage": "unmask", "secagg-context": ctx,
                             "secagg-survivors": [VICTIM], "secagg-dropped": others})
    assert refused(r, "survivors, this site requires")
    # and listed as dropped itself it refuses too (each site answers once: a fresh exchange)
    grid2 = LocalGrid(tmp_path / "2", SITES)
    strategy2 = SecureAggregation(None, evaluate=True)
    _evaluate(grid2, strategy2)
    r = query(grid2, VICTIM, {"secagg-stage": "unmask", "secagg-context": strategy2._exchange.context,
                              "secagg-survivors": others, "secagg-dropped": [VICTIM]})
    assert refused(r, "listed as dropped")
    r = query(grid2, 11, {"secagg-stage": "unmask", "secagg-context": strategy2._exchange.context,
                          "secagg-survivors": sorted(SITES), "secagg-dropped": [VICTIM]})
    assert refused(r, "both as surviving and as dropped")


def _keys_round(grid: LocalGrid, context: str) -> dict[int, dict]:
    out = {}
    for n in grid.sites:
        r = query(grid, n, {"secagg-stage": "keys", "secagg-context": context})
        assert not r.has_error(), r.error.reason
        out[n] = dict(r.content["secagg"])
    return out


def _share_cfg(context: str, keys: dict[int, dict]) -> dict:
    """The share step as a server would send it with every site a neighbour (5 sites, 12 neighbours)."""
    nodes = sorted(keys)
    return {"secagg-stage": "share", "secagg-context": context, "secagg-nodes": nodes, "secagg-key-nodes": nodes,
            "secagg-pk1": [keys[n]["pk1"] for n in nodes], "secagg-pk2": [keys[n]["pk2"] for n in nodes],
            "secagg-signatures": [keys[n]["signature"] for n in nodes],
            "secagg-signers": [keys[n]["signer"] for n in nodes], "secagg-neighbours": 12}


def test_the_server_cannot_relay_its_own_key_as_a_peers(tmp_path):
    grid = LocalGrid(tmp_path, SITES)
    ctx = f"{RUN}/1/evaluate"
    keys = _keys_round(grid, ctx)
    own = secagg.new_keypair()[1]
    forged = {**keys, 22: {**keys[22], "pk1": own}}  # keeps site 22's signature
    for n in (11, VICTIM):
        assert refused(query(grid, n, _share_cfg(ctx, forged)), "do not match their signature")
    # signing its substitute with its own key does not help: that key is not in the roster
    server_key = generate_key_pairs()[0]
    signed = {**forged, 22: {**forged[22], "signature": sign_message(server_key, secagg.key_payload(ctx, 22, own, keys[22]["pk2"])),
                             "signer": secagg.fingerprint(server_key.public_key())}}
    assert refused(query(grid, 44, _share_cfg(ctx, signed)), "outside the consortium's roster")
    # a site's own keys changed, or two peers with one key, are refused as well
    swapped = {**keys, VICTIM: {**keys[VICTIM], "pk1": keys[11]["pk1"]}}
    assert refused(query(grid, 55, _share_cfg(ctx, swapped)), "share a public key")


def test_a_peer_list_holding_only_the_victim_is_refused(tmp_path):
    grid = LocalGrid(tmp_path, SITES)
    ctx = f"{RUN}/1/evaluate"
    keys = _keys_round(grid, ctx)
    assert refused(query(grid, VICTIM, _share_cfg(ctx, {VICTIM: keys[VICTIM]})), "1 sites in the aggregate")
    assert refused(query(grid, 11, _share_cfg(ctx, {11: keys[11], 22: keys[22]})), "2 sites in the aggregate")
    # without its own entry the site does not go on either, nor with a neighbour's keys left out
    assert refused(query(grid, 44, _share_cfg(ctx, {n: keys[n] for n in SITES if n != 44})), "own keys are missing")
    partial = {**_share_cfg(ctx, keys), "secagg-nodes": sorted(SITES) + [99]}
    assert refused(query(grid, 55, partial), "not this site's neighbours")


def test_keys_and_context_are_single_use(tmp_path):
    grid = LocalGrid(tmp_path, SITES)
    strategy = SecureAggregation(None, evaluate=True)
    msgs, replies = _evaluate(grid, strategy)
    assert len(replies) == 5
    # a second model under the same exchange (same masks) is refused: the difference would leak
    second = grid.send_and_receive([msgs[0]])
    assert refused(second[0], "step out of order")
    # and a key exchange for a context seen before, or of another run, never starts
    assert refused(query(grid, 11, {"secagg-stage": "keys", "secagg-context": strategy._exchange.context}),
                   "was used before")
    assert refused(query(grid, 11, {"secagg-stage": "keys", "secagg-context": "999/1/evaluate"}), "not of this run")


def test_unmask_before_submitting_is_refused_and_unsigned_sites_do_not_start(tmp_path):
    grid = LocalGrid(tmp_path, SITES)
    ctx = f"{RUN}/1/evaluate"
    keys = _keys_round(grid, ctx)
    for n in SITES:
        assert not query(grid, n, _share_cfg(ctx, keys)).has_error()
    r = query(grid, 11, {"secagg-stage": "unmask", "secagg-context": ctx,
                         "secagg-survivors": [22, 44, 55], "secagg-dropped": [VICTIM]})
    assert refused(r, "step out of order")
    grid.sites[22].node_config.pop("secagg-signing-key")
    assert refused(query(grid, 22, {"secagg-stage": "keys", "secagg-context": f"{RUN}/2/evaluate"}), "no signing key")


def test_a_site_requiring_secure_training_refuses_a_plain_training_request(tmp_path):
    grid = LocalGrid(tmp_path, SITES, {n: {"w": np.zeros(2, np.float32)} for n in SITES})
    grid.sites[11].node_config["secagg-require-train"] = True
    msg = planned([11], MessageType.TRAIN, arrays={"w": np.zeros(2, np.float32)})[0]
    assert refused(grid.deliver(msg), "only under secure aggregation")
    assert not grid.deliver(planned([22], MessageType.TRAIN, arrays={"w": np.zeros(2, np.float32)})[0]).has_error()
