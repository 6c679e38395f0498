#!/usr/bin/env bash
# Runs conformance areas as if the public @context documents the suite names were reachable: a
# check of the behaviour those tests exercise, NOT a conformance figure (docs/conformance.md).
#
# The jsonldContext tests name @contexts on the internet (fiware.github.io, smartdatamodels.org,
# and forge.etsi.org URLs that run.sh does not rewrite), which this machine and CI cannot reach,
# so offline they stop at 503 LdContextNotAvailable. This script runs scripts/conformance.py in
# a network and mount namespace of its own where those three host names are 127.0.0.1 (a private
# /etc/hosts), served by a stand-in server over HTTP and HTTPS (a certificate from a throw-away
# CA that only the broker of this run trusts, through SSL_CERT_FILE):
#   - forge.etsi.org/rep/cim/ngsi-ld-test-suite/-/raw/develop/resources/jsonld-contexts/<file>:
#     the suite's own copy of <file>;
#   - the fiware.github.io and smartdatamodels.org documents: PLACEHOLDERS (small @contexts of our
#     own; the real ones are not on this machine), so these runs say nothing about those
#     documents' content.
# Nothing else changes: the broker, its settings (CIDADE_PRIVATE_NETWORKS=127.0.0.0/8 as in
# every conformance run) and the suite are those of scripts/conformance.py.
#
# usage (root, with unshare, ip, openssl): scripts/conformance-standins.sh STORE [AREAS] [OUT]
#   STORE sqlite or postgres; AREAS as --areas (default jsonldContext); OUT default
#   build/conformance-standins. CONFORMANCE_DIR as for scripts/conformance.py.
set -euo pipefail
SELF=$(realpath "$0")
HERE=$(cd "$(dirname "$SELF")/.." && pwd)
STORE=${1:?usage: conformance-standins.sh STORE [AREAS] [OUT]}
AREAS=${2:-jsonldContext}
OUT=$(realpath -m "${3:-$HERE/build/conformance-standins}")
PY="$HERE/.venv/bin/python"
SUITE=$(cd "$HERE" && "$PY" -c 'import sys; sys.path.insert(0, "scripts"); import conformance as c; print(c.suite_dir())')
[ -f "$SUITE/run.sh" ] || { echo "no conformance suite at $SUITE (set CONFORMANCE_DIR)"; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (unshare --net --mount)"; exit 2; }

if [ -z "${STANDIN_INSIDE:-}" ]; then
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  cd "$WORK"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj "/CN=stand-in CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj "/CN=stand-in" 2>/dev/null
  printf 'subjectAltName=DNS:fiware.github.io,DNS:forge.etsi.org,DNS:smartdatamodels.org\nextendedKeyUsage=serverAuth\n' >ext.cnf
  openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 1 \
    -extfile ext.cnf 2>/dev/null
  # The usual trust store as well, so that the run is otherwise as without stand-ins.
  TRUSTED=${SSL_CERT_FILE:-$("$PY" -c 'import ssl; print(ssl.get_default_verify_paths().openssl_cafile)')}
  cat "$TRUSTED" ca.pem >bundle.pem 2>/dev/null || cp ca.pem bundle.pem
  { cat /etc/hosts; echo "127.0.0.1 fiware.github.io forge.etsi.org smartdatamodels.org"; } >hosts
  cat >standin.py <<'PY'
import http.server, json, pathlib, ssl, sys, threading
suite = pathlib.Path(sys.argv[1]) / "resources" / "jsonld-contexts"
FORGE = "/rep/cim/ngsi-ld-test-suite/-/raw/develop/resources/jsonld-contexts/"
PLACEHOLDERS = {  # not the publishers' documents: small @contexts of our own
    "/context.jsonld": {"@context": {"sdm": "https://smartdatamodels.org/"}},
    "/data-models/context.jsonld": {"@context": {"fiware": "https://uri.fiware.org/ns/data-models#"}},
    "/NGSI-LD_TestSuite/ldContext/testContext.jsonld": {"@context": {"T1": "https://example.org/T1"}},
}
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = None
        if self.path.startswith(FORGE) and "/" not in self.path[len(FORGE):]:
            f = suite / self.path[len(FORGE):]
            body = f.read_bytes() if f.is_file() else None
        elif self.path in PLACEHOLDERS:
            body = json.dumps(PLACEHOLDERS[self.path]).encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/ld+json")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")
    def log_message(self, *args):
        pass
plain = http.server.ThreadingHTTPServer(("127.0.0.1", 80), Handler)
tls = http.server.ThreadingHTTPServer(("127.0.0.1", 443), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("srv.pem", "srv.key")
tls.socket = context.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=plain.serve_forever, daemon=True).start()
tls.serve_forever()
PY
  PG=""
  if [ "$STORE" = postgres ]; then
    PG=$(cd "$HERE" && "$PY" -c 'import sys; sys.path.insert(0, "scripts"); import conformance as c; print(c.socket_url(c.postgres_url()) or "")')
    [ -n "$PG" ] || { echo "PostgreSQL's Unix socket not found"; exit 2; }
  fi
  STANDIN_INSIDE=1 STANDIN_WORK="$WORK" CIDADE_CONFORMANCE_POSTGRES="${PG:-${CIDADE_CONFORMANCE_POSTGRES:-}}" \
    unshare --net --mount -- "$SELF" "$STORE" "$AREAS" "$OUT"
  "$PY" - "$OUT/$STORE/core/result.json" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
print(f"with stand-ins (not a conformance figure): {r['store']} {r['passed']} of {r['total']}")
PY
  exit 0
fi

# Inside the namespaces: our own /etc/hosts, loopback up, the stand-in server, then the run.
mount --bind "$STANDIN_WORK/hosts" /etc/hosts
ip link set lo up
(cd "$STANDIN_WORK" && exec python3 standin.py "$SUITE") &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/443) 2>/dev/null && break; sleep 0.1; done
cd "$HERE"
SSL_CERT_FILE="$STANDIN_WORK/bundle.pem" "$PY" scripts/conformance.py --in-namespace \
  --stores "$STORE" --groups core --areas "$AREAS" --out "$OUT"
