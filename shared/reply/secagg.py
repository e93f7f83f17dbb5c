"""Secure aggregation with double masking and threshold secret sharing (SecAgg+).

Bonawitz et al. 2017 (CCS), with the neighbour graph of Bell et al. 2020: every site
adds to its fixed-point vector a *self-mask* PRG(b) and, for every neighbour j, a
*pairwise mask* +-PRG(s_ij) from an X25519 key agreement; the seed b and the seed
of the mask private key are Shamir-shared (threshold t, a strict majority of the
holders) among the neighbours, encrypted to each. The server sums the masked vectors;
for every survivor it rebuilds b from t shares, for every dropped site its key's seed.
Each holder reveals, per peer, **one** of the two (b for a survivor, the key for a
dropped site) and answers one unmask request per context; since t holders are
needed for either, the server can never obtain both for the same site.

This module holds the arithmetic and the checks shared by both sides; the site's
state machine is :mod:`fedaegis.client.secure_aggregation`, the server's
:mod:`fedaegis.server.secure_evaluation`. Primitives are Flower's
(``flwr.common.secure_aggregation``: Fernet encryption of the shares, its Shamir share
layout over pycryptodome's Shamir;
``flwr.supercore.primitives.asymmetric``: ECDSA with the SuperNode's own key, of any NIST
curve Flower accepts) and ``cryptography``'s: X25519 key agreement (Flower's P-384 ECDH was
20x slower and made the round at 50 sites 3x the plain one) and a mask generator of AES-CTR
keyed by HKDF (Flower's own ``pseudo_rand_gen`` folds its seed into 32 bits, which a server
could search).

Every secret that is Shamir-shared is 16 random bytes, one chunk of pycryptodome's
GF(2^128) sharing (whose arithmetic is pure Python, the protocol's largest cost): the
self-mask seed, and the seed from which the mask key pair is derived (HKDF to an X25519
private key). 128 bits is the security of every other part (X25519, AES-128 in Fernet,
ECDSA P-256), so a longer secret would cost a second chunk for nothing.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from Crypto.Protocol.SecretSharing import Shamir

from ..run.paths import private_dir, write_private

MODULUS_BITS = 62
MODULUS = 1 << MODULUS_BITS
SCALE = 1 << 20  # fixed point: 2**-20 resolution for sums, noisy counts and weights
PREFIX = "secagg."
DEFAULT_NEIGHBOURS = 12  # about 2 log2(n) at 100 sites (Bell et al. 2020: O(log n))


class SecAggRefused(ValueError):
    """A site refuses a secure-aggregation request; the message says which check failed."""


# ---------------------------------------------------------------- encoding
def encode(values: np.ndarray) -> np.ndarray:
    """Fixed-point encoding modulo 2**62 (two's complement for negatives)."""
    q = np.rint(np.asarray(values, dtype=np.float64) * SCALE).astype(np.int64)
    return q.view(np.uint64) & np.uint64(MODULUS - 1)


def decode(total: np.ndarray) -> np.ndarray:
    v = np.asarray(total, dtype=np.uint64) & np.uint64(MODULUS - 1)
    signed = v.astype(np.int64) - np.where(v >= np.uint64(MODULUS // 2), MODULUS, 0).astype(np.int64)
    return signed.astype(np.float64) / SCALE


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a + b) & np.uint64(MODULUS - 1)  # uint64 wraps at 2**64, a multiple of 2**62


def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b) & np.uint64(MODULUS - 1)


# ---------------------------------------------------------------- masks
def prg(seed: bytes, context: str, size: int) -> np.ndarray:
    """``size`` uniform values modulo 2**62 from ``seed``, bound to ``context`` (HKDF, AES-256-CTR)."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"fedaegis-secagg-mask/" + context.encode()).derive(seed)
    enc = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()
    stream = enc.update(b"\0" * (8 * size)) + enc.finalize()
    return np.frombuffer(stream, dtype=np.uint64) & np.uint64(MODULUS - 1)


SECRET_BYTES = 16  # every Shamir-shared secret: one 16-byte chunk


def new_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 (private, public) pair, raw 32 bytes each."""
    return _raw_pair(X25519PrivateKey.generate())


def seeded_keypair(seed: bytes) -> tuple[bytes, bytes]:
    """The X25519 (private, public) pair derived from a 16-byte ``seed`` (HKDF-SHA256).

    The mask key pair is made this way so that only its seed is Shamir-shared (one chunk);
    rebuilding the seed of a dropped site gives the server its private key, as in SecAgg+.
    """
    if len(seed) != SECRET_BYTES:
        raise ValueError(f"a mask-key seed has {SECRET_BYTES} bytes, not {len(seed)}")
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fedaegis-secagg-mask-key").derive(seed)
    return _raw_pair(X25519PrivateKey.from_private_bytes(raw))


def _raw_pair(sk: X25519PrivateKey) -> tuple[bytes, bytes]:
    return (sk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()),
            sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def pair_seed(sk: bytes, peer_pk: bytes) -> bytes:
    """The secret a pair of sites agrees on: X25519, then HKDF; base64 so it is also a Fernet key."""
    return pair_seeds(sk, {0: peer_pk})[0]


def pair_seeds(sk: bytes, peers: Mapping[int, bytes]) -> dict[int, bytes]:
    """:func:`pair_seed` with each of ``peers`` (node -> public key), loading ``sk`` once."""
    key = X25519PrivateKey.from_private_bytes(sk)
    out = {}
    for node, pk in peers.items():
        shared = key.exchange(X25519PublicKey.from_public_bytes(pk))
        out[node] = base64.urlsafe_b64encode(
            HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fedaegis-secagg-pair").derive(shared))
    return out


def pairwise_masks(sk: bytes, me: int, peers: Mapping[int, bytes], context: str, size: int) -> np.ndarray:
    """Sum of this site's signed pairwise masks with ``peers`` (node -> mask public key)."""
    total = np.zeros(size, dtype=np.uint64)
    for node, seed in pair_seeds(sk, peers).items():
        m = prg(seed, context, size)
        total = add(total, m) if me < node else sub(total, m)
    return total


# ---------------------------------------------------------------- who shares with whom
def neighbours(nodes: Sequence[int], context: str, k: int) -> dict[int, list[int]]:
    """Each node's neighbours: a ring of ``k`` (k/2 each side) in an order hashed from ``context``.

    Computed the same way by every site and by the server from the (signed) peer list,
    so the server does not pick anyone's neighbours. ``k`` >= n - 1: everyone.
    """
    order = sorted(nodes, key=lambda n: hashlib.sha256(f"{context}/{n}".encode()).digest())
    n = len(order)
    if k >= n - 1:
        return {a: [b for b in order if b != a] for a in order}
    half = max(1, k // 2)
    out: dict[int, list[int]] = {}
    for i, a in enumerate(order):
        near = {order[(i + d) % n] for d in range(-half, half + 1) if d}
        out[a] = sorted(near)
    return out


def threshold(holders: int) -> int:
    """Shares needed to rebuild a secret: a strict majority of its ``holders`` (neighbours and self)."""
    return holders // 2 + 1


# ---------------------------------------------------------------- identity
def key_payload(context: str, node: int, pk1: bytes, pk2: bytes) -> bytes:
    """What a site signs: its two fresh public keys, for this node id and this context only."""
    return b"|".join([b"fedaegis-secagg-v1", context.encode(), str(node).encode(),
                      hashlib.sha256(pk1).digest(), hashlib.sha256(pk2).digest()])


def fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def load_public_keys(text: str) -> dict[str, ec.EllipticCurvePublicKey]:
    """A roster: OpenSSH lines (the SuperNodes' ``.pub`` files) and/or PEM blocks, by fingerprint."""
    pem = re.compile(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", re.S)
    keys = [serialization.load_pem_public_key(m.group(0).encode()) for m in pem.finditer(text)]
    keys += [serialization.load_ssh_public_key(line.strip().encode())
             for line in pem.sub("", text).splitlines() if line.strip().startswith(("ecdsa-", "ssh-"))]
    out = {}
    for key in keys:
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("roster keys must be ECDSA keys (as SuperNode authentication keys are)")
        out[fingerprint(key)] = key
    return out


def read_roster(path: Path) -> dict[str, ec.EllipticCurvePublicKey]:
    """The roster at ``path``: a file of public keys, or a folder of ``*.pub`` files."""
    files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
    return load_public_keys("\n".join(f.read_text() for f in files))


def simulation_keys(folder: Path, num_sites: int) -> Path:
    """Signing keys of a simulated consortium: ``site-<partition>.key`` (owner-only) and ``.pub``.

    Created once and kept (concurrent simulations may share the folder: a key is
    published by an exclusive hard link, so two writers never mix key and ``.pub``).
    """
    private_dir(folder)
    for i in range(num_sites):
        key_path = folder / f"site-{i}.key"
        if key_path.exists():
            continue
        sk = ec.generate_private_key(ec.SECP256R1())
        tmp = folder / f".site-{i}.{os.getpid()}"
        write_private(tmp, sk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                            serialization.NoEncryption()))
        try:
            os.link(tmp, key_path)
        except FileExistsError:
            continue
        finally:
            tmp.unlink()
        pub = sk.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        write_private(folder / f"site-{i}.pub", pub + b"\n")
    return folder


def load_private_key(data: bytes) -> ec.EllipticCurvePrivateKey:
    """A SuperNode's authentication key (OpenSSH or PEM)."""
    key = (serialization.load_ssh_private_key(data, password=None) if b"OPENSSH" in data
           else serialization.load_pem_private_key(data, password=None))
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the signing key must be an ECDSA key (as SuperNode authentication keys are)")
    return key


# ---------------------------------------------------------------- Shamir sharing
# Flower's share layout (``flwr.common.secure_aggregation.crypto.shamir``: a 4-byte index, then
# one 16-byte pycryptodome Shamir share per 16-byte chunk of the secret), without its thread
# pool per call, which cost half of a masked round at 50 sites, and without its padding:
# the secrets here have a fixed length (``SECRET_BYTES``), so padding would only add a chunk.
def create_shares(secret: bytes, threshold: int, num: int) -> list[bytes]:
    """``num`` shares of ``secret`` (a multiple of 16 bytes), any ``threshold`` of which rebuild it."""
    if not secret or len(secret) % 16:
        raise ValueError(f"a shared secret is a multiple of 16 bytes, not {len(secret)}")
    out = [bytearray(i.to_bytes(4, "little")) for i in range(1, num + 1)]
    for start in range(0, len(secret), 16):
        for idx, share in Shamir.split(threshold, num, secret[start:start + 16], ssss=False):
            out[idx - 1] += share
    return [bytes(s) for s in out]


def rebuild(shares: Sequence[bytes], needed: int) -> bytes:
    """The secret behind ``needed`` or more shares from :func:`create_shares`."""
    if len(shares) < needed:
        raise ValueError(f"secure aggregation: {len(shares)} shares, {needed} needed")
    used = list(shares)[:needed]
    chunks = (len(used[0]) - 4) // 16
    if chunks < 1 or any(len(s) != 4 + 16 * chunks for s in used):
        raise ValueError("secure aggregation: the shares are malformed")
    return b"".join(
        Shamir.combine([(int.from_bytes(s[:4], "little"), s[4 + 16 * c:20 + 16 * c]) for s in used], ssss=False)
        for c in range(chunks))


# ---------------------------------------------------------------- what may travel
def record_problems(record: Mapping[str, object]) -> list[str]:
    """Violations in a site's ``secagg`` record: public keys, a signature, encrypted or requested shares."""
    allowed = {"pk1": bytes, "pk2": bytes, "signature": bytes, "signer": str, "dst": list, "ciphertexts": list,
               "b-nodes": list, "b-shares": list, "sk-nodes": list, "sk-shares": list}
    problems = []
    for name, value in record.items():
        kind = allowed.get(name)
        if kind is None or not isinstance(value, kind):
            problems.append(f"the secagg record may not hold {name!r}")
        elif kind is list and not all(isinstance(v, int | bytes) and not isinstance(v, bool) for v in value):
            problems.append(f"the secagg record's {name!r} must list node ids or ciphertexts")
    return problems
