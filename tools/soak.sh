#!/usr/bin/env bash
# Soak test: starts `edgellm serve` (release build) with its Unix socket and a serial console on
# a socat pseudo-terminal pair, then runs tools/soak.py against it: 2000 requests over at least 10
# minutes from 4 concurrent clients (random sampling, streamed or not, 10% disconnecting), plus a
# serial client chatting all the while. Prints soak.py's JSON figures and the server's exit status
# after SIGTERM; exits non-zero when any check fails.
#
#   tools/soak.sh [-m MODEL] [-t THREADS] [--requests N] [--minutes M] [--early N] [--clients N]
#
# Quick run (about 2 minutes): tools/soak.sh --requests 500 --minutes 0 --early 50
set -euo pipefail

cd "$(dirname "$0")/.."
MODEL=${EDGELLM_MODEL:-models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=2
REQUESTS=2000
MINUTES=10
EARLY=200
CLIENTS=4
while [[ $# -gt 0 ]]; do
    case "$1" in
        -m) MODEL=$2; shift 2 ;;
        -t) THREADS=$2; shift 2 ;;
        --requests) REQUESTS=$2; shift 2 ;;
        --minutes) MINUTES=$2; shift 2 ;;
        --early) EARLY=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "soak.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

BIN=target/release/edgellm
[[ -x $BIN ]] || cargo build --release -p edgellm
[[ -f $MODEL ]] || tools/fetch-model.sh
command -v socat >/dev/null || { echo "soak.sh: socat missing (make setup)" >&2; exit 1; }

DIR=$(mktemp -d /tmp/edgellm-soak.XXXXXX)
SERVE_PID=
SOCAT_PID=
cleanup() {
    [[ -n $SERVE_PID ]] && kill -9 "$SERVE_PID" 2>/dev/null || true
    [[ -n $SOCAT_PID ]] && kill "$SOCAT_PID" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

socat pty,raw,echo=0,link="$DIR/tty-serve" pty,raw,echo=0,link="$DIR/tty-client" &
SOCAT_PID=$!
for _ in $(seq 100); do [[ -e $DIR/tty-serve && -e $DIR/tty-client ]] && break; sleep 0.05; done

"$BIN" serve -m "$MODEL" -t "$THREADS" --socket "$DIR/edgellm.sock" --serial "$DIR/tty-serve" \
    --queue 64 2>"$DIR/serve.log" &
SERVE_PID=$!
for _ in $(seq 600); do
    grep -q "ready" "$DIR/serve.log" 2>/dev/null && break
    kill -0 "$SERVE_PID" 2>/dev/null || { cat "$DIR/serve.log" >&2; exit 1; }
    sleep 0.1
done

status=0
python3 tools/soak.py --socket "$DIR/edgellm.sock" --pid "$SERVE_PID" --serial "$DIR/tty-client" \
    --requests "$REQUESTS" --clients "$CLIENTS" --min-seconds "$((MINUTES * 60))" --early "$EARLY" \
    || status=$?

kill -TERM "$SERVE_PID"
serve_status=0
wait "$SERVE_PID" || serve_status=$?
SERVE_PID=
echo "server exit status after SIGTERM: $serve_status (socket file left: $([[ -e $DIR/edgellm.sock ]] && echo yes || echo no))"
grep -c "^\[ERROR" "$DIR/serve.log" | sed 's/^/server log ERROR lines: /' || true
[[ $serve_status -eq 0 && ! -e $DIR/edgellm.sock ]] || status=1
exit "$status"
