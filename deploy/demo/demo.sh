#!/usr/bin/env bash
# deploy/demo/demo.sh (run by `make demo`, which builds bin/kvproxy,
# bin/legacysim and bin/legacygen first)
#
# A live migration on this machine, start to finish, in one to two minutes:
#   1. a throwaway PostgreSQL (tests/harness/with-servers.sh) with two
#      databases: "legacy" (the SQL-era ref store, filled by legacygen) and
#      "kvstore" (the KV store, kv.driver postgres);
#   2. kvproxy serve in front of "legacy", phase passthrough;
#   3. the legacy-client simulator writing through the proxy all along
#      (rounds of DEMO_ROUND, each checking its acknowledged writes at the end);
#   4. kvproxy phase set dual-write, backfill, verify, cutover, finalize,
#      with kvproxy status between the steps;
#   5. kvproxy left running in kv-only, with its status page URL printed.
# Ctrl-C stops everything and removes the throwaway PostgreSQL.
#
# Settings (environment):
#   DEMO_EXIT=1          stop at the end instead of waiting for Ctrl-C (CI)
#   DEMO_CLIENTS=4       simulated lakeFS processes
#   DEMO_ROUND=15s       length of one simulator round
#   DEMO_SCALE=0.001     legacygen size (0.001: 1 repository, ~11k rows)
#   DEMO_RATE=4000       backfill --max-rows-per-second (0: no cap)
#   DEMO_PAUSE=4         seconds of traffic between the steps
#   DEMO_LISTEN          client listener (default 127.0.0.1:6432 if free)
#   DEMO_ADMIN_LISTEN    admin listener (default 127.0.0.1:9187 if free)
#   DEMO_BIN             where the binaries are (default bin/ of the repo)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${DEMO_BIN:-$ROOT/bin}

for b in kvproxy legacysim legacygen; do
	[[ -x "$BIN/$b" ]] || { echo "demo: $BIN/$b not found: run make demo (it builds them)" >&2; exit 2; }
done

# Run inside the harness, which starts PostgreSQL and stops it however the
# demo ends. The marker keeps a developer's own KVPROXY_TEST_PG_DSN from
# being mistaken for the demo's throwaway server.
if [[ -z "${DEMO_INSIDE_HARNESS:-}" ]]; then
	exec env DEMO_INSIDE_HARNESS=1 WITH_SERVERS=pg "$ROOT/tests/harness/with-servers.sh" "$0" "$@"
fi

CLIENTS=${DEMO_CLIENTS:-4}
ROUND=${DEMO_ROUND:-15s}
SCALE=${DEMO_SCALE:-0.001}
RATE=${DEMO_RATE:-4000}
PAUSE=${DEMO_PAUSE:-4}
PATH="$BIN:$KVPROXY_TEST_PG_BINDIR:$PATH"
DIR=$(mktemp -d "${TMPDIR:-/tmp}/kvproxy-demo.XXXXXX")
PROXY_PID=""
SIM_PID=""
KEEP_LOGS=""

if [[ -t 1 ]]; then
	B=$'\e[1m' DIM=$'\e[2m' GRN=$'\e[32m' RED=$'\e[31m' RST=$'\e[0m'
else
	B="" DIM="" GRN="" RED="" RST=""
fi
say() { printf '%s\n' "$*"; }
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$RST"; }
fail() {
	printf '%sdemo: %s%s\n' "$RED" "$*" "$RST" >&2
	KEEP_LOGS=1
	exit 1
}
# show runs a kvproxy command the way an operator would type it.
show() {
	printf '%s$ %s%s\n' "$DIM" "$*" "$RST"
	"$@"
}

cleanup() {
	local rc=$?
	set +e
	trap - INT TERM
	if [[ -n "$SIM_PID" ]]; then
		kill "$SIM_PID" 2>/dev/null
		wait "$SIM_PID" 2>/dev/null
	fi
	if [[ -n "$PROXY_PID" ]]; then
		kill "$PROXY_PID" 2>/dev/null # SIGTERM: drains sessions, deregisters
		wait "$PROXY_PID" 2>/dev/null
	fi
	if [[ $rc -ne 0 && $rc -ne 130 ]] || [[ -n "$KEEP_LOGS" ]]; then
		say "demo: logs kept in $DIR (kvproxy.log, sim.log)" >&2
	else
		rm -rf "$DIR"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'say ""; say "demo: stopping"; exit 130' INT TERM

# addr_or_free prints want if nothing listens there, else a free port.
addr_or_free() {
	local want=$1 port
	if ! (exec 3<>"/dev/tcp/${want%:*}/${want##*:}") 2>/dev/null; then
		echo "$want"
		return
	fi
	for _ in $(seq 1 100); do
		port=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "127.0.0.1:$port"
			return
		fi
	done
	fail "no free port found"
}

# --- the legacy database ----------------------------------------------------
step "A throwaway PostgreSQL with the SQL-era ref store"
base=${KVPROXY_TEST_PG_DSN%%\?*}
base=${base%/*}
LEGACY_DSN="$base/legacy?sslmode=disable"
KV_DSN="$base/kvstore?sslmode=disable"
psql -q "$KVPROXY_TEST_PG_DSN" -c 'CREATE DATABASE legacy' -c 'CREATE DATABASE kvstore' >/dev/null
say "legacy ref store: $LEGACY_DSN"
say "KV store:         $KV_DSN (kv.driver postgres)"
rows=$(legacygen -dsn "$LEGACY_DSN" -scale "$SCALE") || fail "legacygen failed"
say "generated: $rows"

# --- the proxy ----------------------------------------------------------------
step "kvproxy serve in front of it (phase passthrough)"
LISTEN=${DEMO_LISTEN:-$(addr_or_free 127.0.0.1:6432)}
ADMIN=${DEMO_ADMIN_LISTEN:-$(addr_or_free 127.0.0.1:9187)}
# The CLI steps below read the same settings from the environment.
export KVPROXY_UPSTREAM=$LEGACY_DSN KVPROXY_KV_DRIVER=postgres KVPROXY_KV_DSN=$KV_DSN
export KVPROXY_LOG_LEVEL=error # the steps print their own output
kvproxy serve --phase passthrough --listen "$LISTEN" --admin-listen "$ADMIN" --log-level info \
	>"$DIR/kvproxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 1 300); do
	grep -q 'msg="kvproxy ready"' "$DIR/kvproxy.log" && break
	kill -0 "$PROXY_PID" 2>/dev/null || { cat "$DIR/kvproxy.log" >&2; fail "kvproxy serve exited"; }
	sleep 0.1
done
grep -q 'msg="kvproxy ready"' "$DIR/kvproxy.log" || fail "kvproxy serve not ready after 30s"
LISTEN=$(sed -n 's/.*msg="kvproxy ready" listen=\([^ ]*\).*/\1/p' "$DIR/kvproxy.log" | head -1)
ADMIN=$(sed -n 's/.*msg="admin server listening" addr=\([^ ]*\).*/\1/p' "$DIR/kvproxy.log" | head -1)
CLIENT_DSN="postgres://postgres@$LISTEN/legacy?sslmode=disable"
say "clients: $CLIENT_DSN"
say "admin:   http://$ADMIN/  (log: $DIR/kvproxy.log)"

# --- the legacy client --------------------------------------------------------
step "The legacy-client simulator writes through the proxy ($CLIENTS clients, rounds of $ROUND)"
# One round after the other until the stop file appears; each round ends by
# reading back, through the proxy, every write the proxy acknowledged.
sim_loop() {
	local n=0 rc sim=""
	trap '[[ -n "$sim" ]] && kill "$sim" 2>/dev/null; exit 0' TERM
	while [[ ! -e "$DIR/sim.stop" ]]; do
		n=$((n + 1))
		legacysim -dsn "$CLIENT_DSN" -clients "$CLIENTS" -duration "$ROUND" -tolerant >"$DIR/sim.round" 2>&1 &
		sim=$!
		rc=0
		wait "$sim" || rc=$?
		sim=""
		{
			echo "--- round $n (exit $rc)"
			cat "$DIR/sim.round"
		} >>"$DIR/sim.log"
		if [[ $rc -eq 0 ]]; then
			echo "round $n: $(grep -E '^seed ' "$DIR/sim.round" | head -1); $(grep -E '^verify: ' "$DIR/sim.round" | head -1)" >>"$DIR/sim.rounds"
		else
			echo "round $n FAILED: $(tail -1 "$DIR/sim.round")" >>"$DIR/sim.rounds"
		fi
	done
}
: >"$DIR/sim.rounds"
sim_loop &
SIM_PID=$!
sleep "$PAUSE"
show kvproxy status

# wait_instances waits until the running proxy has seen the current epoch:
# sessions follow a phase change at their next idle point.
wait_instances() {
	for _ in $(seq 1 60); do
		out=$(kvproxy status 2>/dev/null) || true
		if [[ -n "$out" ]] && ! grep -q '(behind)' <<<"$out"; then
			return 0
		fi
		sleep 0.5
	done
	say "(the proxy has not caught up with the phase record yet)"
}

step "Dual writes: PostgreSQL stays authoritative, every ref-store write is mirrored to KV"
show kvproxy phase set dual-write
wait_instances
sleep "$PAUSE"

step "Backfill: copy what was written before dual writes began (capped at ${RATE} rows/s)"
show kvproxy backfill --max-rows-per-second "$RATE" --progress-interval 1s || fail "backfill failed"
show kvproxy status

step "Verify: compare both stores on canonical values, repairing from PostgreSQL"
say "(under live load a write can land between the snapshot and the KV read: --repair re-copies"
say " each difference from the authoritative store and re-checks it)"
show kvproxy verify --repair --samples 3 || fail "verify found differences it could not repair"
sleep "$PAUSE"
show kvproxy status

step "Cutover: KV becomes authoritative, behind a write barrier (PostgreSQL kept current for rollback)"
show kvproxy cutover --timeout 10s || fail "cutover failed (the old phase stays in force)"
wait_instances
sleep "$PAUSE"
show kvproxy status

step "Finalize: stop writing the legacy tables (kv-only)"
show kvproxy finalize --timeout 10s || fail "finalize failed"
wait_instances
sleep "$PAUSE"

step "The simulator's last round: every acknowledged write read back through the proxy"
touch "$DIR/sim.stop"
wait "$SIM_PID" || true
SIM_PID=""
sed 's/^/  /' "$DIR/sim.rounds"
if grep -q FAILED "$DIR/sim.rounds"; then
	KEEP_LOGS=1
	say "${RED}some rounds failed: see $DIR/sim.log${RST}"
fi
show kvproxy status

step "Done"
say "kvproxy is running in kv-only, answering the ref store from the KV store:"
say "  status page:  ${B}http://$ADMIN/${RST}"
say "  status API:   curl http://$ADMIN/api/v1/status"
say "  clients:      psql '$CLIENT_DSN'"
say "  log:          $DIR/kvproxy.log"
if [[ -n "${DEMO_EXIT:-}" && "${DEMO_EXIT}" != 0 ]]; then
	if grep -q FAILED "$DIR/sim.rounds"; then
		fail "the simulator reported failures"
	fi
	say "DEMO_EXIT set: stopping."
	exit 0
fi
say "Press Ctrl-C to stop kvproxy and remove the throwaway PostgreSQL."
# Ctrl-C reaches kvproxy too: a clean exit (or death by a signal) is the
# stop the user asked for, anything else a failure.
rc=0
wait "$PROXY_PID" || rc=$?
PROXY_PID=""
if [[ $rc -eq 0 || $rc -gt 128 ]]; then
	say ""
	say "demo: stopping"
	exit 130
fi
fail "kvproxy serve exited with status $rc; see $DIR/kvproxy.log"
