#!/usr/bin/env bash
# A fuzz run as a new user would make one: a fresh store, its first administrator and an API key
# of theirs (the CLI, as the README says), `cidade serve`, then schemathesis over the served
# /openapi.json with that key, checking that no answer is a server error.
#
# usage: scripts/fuzz-served.sh [STORE_URL] [PORT]
#   STORE_URL  default: a new SQLite file in a temporary folder; a PostgreSQL URL with
#              ?schema=NAME uses (and afterwards drops) that schema
#   PORT       default 8731
# env: FUZZ_EXAMPLES (default 30 per operation)
#
# Two passes: every operation but /auth/, then /auth/ without DELETE (the fuzzer would otherwise
# delete the very account and key it fuzzes with, and meet nothing but 401 afterwards). The
# server runs with CIDADE_RATE_LIMIT=0, or the fuzzer would mostly meet 429.
# Exit status: 0 when neither pass found a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
store=${1:-sqlite:///$scratch/fuzz.db}
port=${2:-8731}
examples=${FUZZ_EXAMPLES:-30}
bin=.venv/bin
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    case $store in
        postgres*schema=*)
            schema=${store##*schema=}
            $bin/python -c "import asyncio, asyncpg, sys
async def go():
    c = await asyncpg.connect(sys.argv[1].split('?')[0]); await c.execute(f'DROP SCHEMA IF EXISTS \"{sys.argv[2]}\" CASCADE'); await c.close()
asyncio.run(go())" "$store" "${schema%%&*}" || true ;;
    esac
    rm -rf "$scratch"
}
trap cleanup EXIT

$bin/cidade migrate --store "$store" >/dev/null
echo 'fuzz-administrator-password-9' \
    | $bin/cidade user add fuzz-admin --role admin --tenant '*' --store "$store" --password-stdin >/dev/null
key=$($bin/cidade key add --owner fuzz-admin --label fuzz --store "$store" | grep '^cdk_')
CIDADE_RATE_LIMIT=0 $bin/cidade serve --port "$port" --store "$store" >"$scratch/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.2
done

status=0
run() {
    $bin/schemathesis run "http://127.0.0.1:$port/openapi.json" \
        -H "Authorization: Bearer $key" --checks not_a_server_error \
        --max-examples "$examples" "$@" || status=$?
}
run --exclude-path-regex '^/auth/'
run --include-path-regex '^/auth/' --exclude-method DELETE
if [ $status -ne 0 ]; then
    echo "the server's log: $scratch/server.log (kept)"; trap - EXIT; kill "$server" 2>/dev/null || true
fi
exit $status
