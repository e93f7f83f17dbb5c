#!/usr/bin/env bash
# Create SuperNode authentication key pairs in the format Flower 1.41 expects.
#
#   deploy/make-node-keys.sh OUT_DIR NAME [NAME ...]
#
# For every NAME writes OUT_DIR/NAME (the private key: an ECDSA P-256 key in OpenSSH format, for
# `flower-supernode --auth-supernode-private-key`; it stays on that SuperNode's machine) and
# OUT_DIR/NAME.pub (the public key in OpenSSH format, for `flwr supernode register NAME.pub`
# against a SuperLink started with --enable-supernode-auth). Existing keys are never overwritten.
# P-256 (128-bit security, as X25519 and AES-128 in secure aggregation); Flower accepts any NIST
# curve, and existing P-384 keys keep working. Uses ssh-keygen when installed, else `cryptography`.
set -euo pipefail

if [[ $# -lt 2 || "$1" == "-h" || "$1" == "--help" ]]; then
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit $(( $# < 2 ? 2 : 0 ))
fi

out=$1; shift
mkdir -p "$out"
umask 077
python=${PYTHON:-python3}

for name in "$@"; do
    if [[ ! "$name" =~ ^[A-Za-z0-9._-]+$ ]]; then
        echo "make-node-keys.sh: invalid name '$name' (letters, digits, . _ - only)" >&2
        exit 2
    fi
    key="$out/$name"
    if [[ -e "$key" || -e "$key.pub" ]]; then
        echo "make-node-keys.sh: $key already exists, left as is" >&2
        continue
    fi
    if command -v ssh-keygen >/dev/null; then
        ssh-keygen -q -t ecdsa -b 256 -N "" -C "" -f "$key"
    else
        "$python" - "$key" <<'PY'
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

key = ec.generate_private_key(ec.SECP256R1())
path = Path(sys.argv[1])
path.write_bytes(key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
path.with_name(path.name + ".pub").write_bytes(key.public_key().public_bytes(
    serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")
PY
    fi
    chmod 600 "$key"
    chmod 644 "$key.pub"
    echo "make-node-keys.sh: $key (private) and $key.pub (register with: flwr supernode register $key.pub)"
done
