#!/usr/bin/env bash
# Create a certificate authority and a TLS server certificate for the Flower SuperLink.
#
#   deploy/make-certs.sh OUT_DIR [HOST ...]
#
# Writes into OUT_DIR:
#   ca.crt      the CA certificate: give it to every SuperNode (--root-certificates), to `flwr`
#               (root-certificates in $FLWR_HOME/config.toml) and to the SuperLink (--ssl-ca-certfile)
#   ca.key      the CA private key: keep it offline; it is only needed to issue new certificates
#   server.pem  the SuperLink's certificate, signed by the CA (--ssl-certfile)
#   server.key  the SuperLink's private key (--ssl-keyfile)
#   superexec.secret  random shared secret for `--isolation process` (SuperLink and the separate
#               flower-superexec, --superexec-auth-secret-file; Compose and Kubernetes use it)
#
# The server certificate's subjectAltName always holds localhost, 127.0.0.1 and ::1 (the SuperLink
# starts its ServerApp process against its own address), plus every HOST given as an argument or in
# $SUPERLINK_HOSTS (space separated): the names or IP addresses SuperNodes and `flwr` use to reach
# the SuperLink (e.g. superlink.example.org, superlink, 10.0.0.5). IPs become IP SANs, others DNS.
# An existing ca.crt/ca.key pair in OUT_DIR is reused, so the script also renews a server
# certificate without re-distributing the CA. DAYS (default 365) sets the validity.
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit $(( $# < 1 ? 2 : 0 ))
fi
command -v openssl >/dev/null || { echo "make-certs.sh: openssl is required" >&2; exit 1; }

out=$1; shift
days=${DAYS:-365}
# shellcheck disable=SC2206
hosts=(localhost 127.0.0.1 ::1 "$@" ${SUPERLINK_HOSTS:-})
mkdir -p "$out"
umask 077

san=""
declare -A seen=()
for h in "${hosts[@]}"; do
    [[ -z "$h" || -n "${seen[$h]:-}" ]] && continue
    seen[$h]=1
    if [[ "$h" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || "$h" == *:* ]]; then
        san+="${san:+,}IP:$h"
    else
        san+="${san:+,}DNS:$h"
    fi
done
# The first host given (else localhost) is the certificate's common name.
cn=${1:-${SUPERLINK_HOSTS%% *}}
cn=${cn:-localhost}

if [[ -f "$out/ca.key" && -f "$out/ca.crt" ]]; then
    echo "make-certs.sh: reusing the CA in $out" >&2
else
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -sha384 \
        -days "$((days * 5))" -subj "/O=fedaegis/CN=fedaegis SuperLink CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
fi

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -sha384 \
    -subj "/O=fedaegis/CN=$cn" -keyout "$out/server.key" -out "$out/server.csr" 2>/dev/null
ext=$(mktemp)
trap 'rm -f "$ext" "$out/server.csr" "$out/ca.srl"' EXIT
cat > "$ext" <<CONF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
CONF
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -days "$days" -sha384 -extfile "$ext" -out "$out/server.pem" 2>/dev/null

[[ -s "$out/superexec.secret" ]] || openssl rand -hex 32 | tr -d '\n' > "$out/superexec.secret"

chmod 600 "$out/ca.key" "$out/server.key" "$out/superexec.secret"
chmod 644 "$out/ca.crt" "$out/server.pem"
openssl verify -CAfile "$out/ca.crt" "$out/server.pem" >/dev/null
echo "make-certs.sh: $out/server.pem for $san (valid $days days), CA $out/ca.crt"
