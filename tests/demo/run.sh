#!/bin/sh
# make run: the demo. Three simulated model servers (small, medium, large:
# different speeds), a private redis-server (own port, data under the build
# tree), and the gateway with conf/demo.yaml. Ctrl-C stops all of it.
# Ports move with IG_DEMO_PORT (gateway, default 8080): the admin listener
# is IG_DEMO_PORT+1010 (9090), the simulators IG_DEMO_PORT-79..-77
# (8001-8003), redis IG_DEMO_PORT-1690 (6390).
set -eu
BUILD=${1:-build}
TOP=$(cd "$(dirname "$0")/../.." && pwd)
PORT=${IG_DEMO_PORT:-8080}
ADMIN=$((PORT + 1010))
S1=$((PORT - 79)); S2=$((PORT - 78)); S3=$((PORT - 77)); RPORT=$((PORT - 1690))
RUN="$BUILD/demo"
mkdir -p "$RUN/redis"
pids=""
cleanup() {
	trap - INT TERM EXIT
	echo
	echo "demo: stopping"
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

"$BUILD/infergate-sim" --port $S1 --model llama-3.2-1b --ttft 20 --itl 10 >"$RUN/sim-small.log" 2>&1 &
pids="$pids $!"
"$BUILD/infergate-sim" --port $S2 --model llama-3.1-8b --ttft 60 --itl 25 >"$RUN/sim-medium.log" 2>&1 &
pids="$pids $!"
"$BUILD/infergate-sim" --port $S3 --model llama-3.1-70b --ttft 200 --itl 60 >"$RUN/sim-large.log" 2>&1 &
pids="$pids $!"
redis-server --port $RPORT --bind 127.0.0.1 --dir "$(cd "$RUN/redis" && pwd)" \
    --save "" --appendonly no >"$RUN/redis.log" 2>&1 &
pids="$pids $!"
sed -e "s/@PORT@/$PORT/; s/@ADMIN@/$ADMIN/; s/@S1@/$S1/; s/@S2@/$S2/; s/@S3@/$S3/; s/@REDIS@/$RPORT/" "$TOP/conf/demo.yaml" >"$RUN/demo.yaml"
cp -r "$TOP/conf/tenants.d" "$RUN/"
sleep 0.3
"$BUILD/infergate" -c "$RUN/demo.yaml" &
pids="$pids $!"
sleep 0.5
cat <<MSG

infergate demo is up: gateway http://127.0.0.1:$PORT, admin http://127.0.0.1:$ADMIN
logs of the simulators and redis: $RUN/

Try:
  curl -s http://127.0.0.1:$PORT/v1/models -H 'Authorization: Bearer sk-demo-key'
  curl -s http://127.0.0.1:$PORT/v1/chat/completions -H 'Authorization: Bearer sk-demo-key' \\
       -H 'Content-Type: application/json' \\
       -d '{"model":"chat-small","messages":[{"role":"user","content":"Hello!"}],"max_tokens":8}'
  curl -sN http://127.0.0.1:$PORT/v1/chat/completions -H 'Authorization: Bearer sk-demo-key' \\
       -H 'Content-Type: application/json' \\
       -d '{"model":"chat-large","stream":true,"messages":[{"role":"user","content":"Hi"}],"max_tokens":8}'
  curl -s http://127.0.0.1:$ADMIN/metrics

Ctrl-C stops everything.
MSG
wait
