"""Pairwise-masking secure aggregation of metric records (Bonawitz et al., without self-masks).

Every pair of sites (i, j) agrees on a secret by X25519 key agreement over keys
relayed by the server; each site adds, for every peer, a pseudo-random mask
(``+`` if its node id is smaller, ``-`` otherwise) to its fixed-point encoded
metrics modulo 2**62. The masks cancel in the sum, so the server learns the
total over sites and nothing about any one site. If a site drops out after the
keys were exchanged, the survivors reveal their masks *with that site only*,
which is safe because the dropped site's masked values never arrived.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MODULUS_BITS = 62
MODULUS = 1 << MODULUS_BITS
SCALE = 1 << 20  # fixed point: 2**-20 resolution for sums and noisy counts
PREFIX = "secagg."


def new_keypair() -> tuple[bytes, bytes]:
    """(private, public) raw X25519 keys; the private key never leaves the site."""
    sk = X25519PrivateKey.generate()
    raw = sk.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return raw, sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _mask(sk: bytes, peer_pk: bytes, context: bytes, size: int) -> np.ndarray:
    shared = X25519PrivateKey.from_private_bytes(sk).exchange(X25519PublicKey.from_public_bytes(peer_pk))
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fedaegis-secagg/" + context).derive(shared)
    gen = np.random.Generator(np.random.PCG64(int.from_bytes(seed, "big")))
    return gen.integers(0, MODULUS, size=size, dtype=np.uint64)


def mask_sum(
    sk: bytes, me: int, peers: Mapping[int, bytes], context: bytes, size: int
) -> np.ndarray:
    """Sum over ``peers`` of this site's signed pairwise masks, modulo 2**62."""
    total = np.zeros(size, dtype=np.uint64)
    for node, pk in peers.items():
        if node == me:
            continue
        m = _mask(sk, pk, context, size)
        total = (total + m) % MODULUS if me < node else (total + (MODULUS - m)) % MODULUS
    return total


def encode(values: Sequence[float]) -> np.ndarray:
    return np.array([int(round(float(v) * SCALE)) % MODULUS for v in values], dtype=np.uint64)


def decode(total: Sequence[int]) -> list[float]:
    out = []
    for v in total:
        v = int(v) % MODULUS
        if v >= MODULUS // 2:
            v -= MODULUS
        out.append(v / SCALE)
    return out


def masked_metrics(
    metrics: Mapping[str, float], sk: bytes, me: int, peers: Mapping[int, bytes], context: bytes
) -> dict[str, int]:
    """``metrics`` encoded and masked, under ``secagg.<name>`` keys (sorted name order)."""
    names = sorted(metrics)
    values = (encode([metrics[n] for n in names]) + mask_sum(sk, me, peers, context, len(names))) % MODULUS
    return {PREFIX + n: int(v) for n, v in zip(names, values)}


def unmask_total(replies: Sequence[Mapping[str, int]], corrections: Sequence[Mapping[str, int]] = ()) -> dict[str, float]:
    """Sum masked replies (and survivors' corrections for dropped peers) and decode."""
    if not replies:
        return {}
    names = sorted(replies[0])
    for r in replies:
        if sorted(r) != names:
            raise ValueError("secure aggregation: sites sent different metric names; masks cannot cancel")
    total = np.zeros(len(names), dtype=np.uint64)
    for r in replies:
        total = (total + np.array([r[n] for n in names], dtype=np.uint64)) % MODULUS
    for c in corrections:
        # a survivor's correction is its mask sum with the dropped peers: remove it
        total = (total + (MODULUS - np.array([c[n] for n in names], dtype=np.uint64) % MODULUS)) % MODULUS
    return {n.removeprefix(PREFIX): v for n, v in zip(names, decode(total))}
