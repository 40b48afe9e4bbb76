#!/usr/bin/env bash
# pgbench through PostgreSQL directly, through PgBouncer (session mode) and
# through kvproxy in passthrough, over loopback TCP; prints one table.
#
# Run by `make bench` inside tests/harness/with-servers.sh; run alone it
# re-executes itself under the harness. Environment:
#   DURATION=20        seconds per pgbench run
#   CLIENTS="1 8 32"   client counts
#   BUILTINS="S N"     pgbench built-ins: S select-only (-S), N simple-update (-N);
#                      SC and NC are the same with a new connection per
#                      transaction (-C), which measures what a client's
#                      start and end cost each target
#   PGBENCH_MODE=simple  -M for every run (simple|extended|prepared)
#   SCALE=10           pgbench -i scale
#   ROUNDS=10          each DURATION is split into ROUNDS runs, interleaved
#                      direct/PgBouncer/kvproxy, so load changes on a shared
#                      machine hit all three alike. The order rotates from
#                      round to round: a fixed order would favour whichever
#                      target runs first while -N's tables grow. TPS and
#                      latency are averaged; /pgb_med is the median of the
#                      per-round ratios (PgBouncer and kvproxy run next to
#                      each other in every round), with a confidence
#                      interval for it and the number of rounds a target
#                      was ahead of PgBouncer.
#   PROXY_CMD          command that runs kvproxy in passthrough; {listen} and
#                      {upstream} are replaced, e.g.
#                      'bin/kvproxy serve --listen {listen} --upstream {upstream} --phase passthrough'
#                      Default: bin/kvproxy serve --phase passthrough on the mem
#                      KV driver when bin/kvproxy exists (make bench builds it),
#                      else wire/internal/passproxy (wire.Server, no Router).
#   PROXY=passproxy    use wire/internal/passproxy even if bin/kvproxy exists
#   PROXY_GOMAXPROCS=1 GOMAXPROCS for the proxy (PgBouncer is single-threaded too,
#                      and the 2 cores here are shared with PostgreSQL and pgbench)
#   PROFILE=file       CPU profile of passproxy, written at the end
#   POOL=200           server connections each proxy may keep for later clients:
#                      PgBouncer's default_pool_size, kvproxy's
#                      relay.upstream_pool (PROXY_BINS builds get their own
#                      defaults; a wrapper script can add the flag)
#   PGBOUNCER_INI      extra lines for pgbouncer.ini's [pgbouncer] section, e.g.
#                      'server_lifetime = 0': a server connection serves one
#                      client and is closed, as kvproxy's do with
#                      relay.upstream_pool 0
#                      (both otherwise hand a client's backend to the next
#                      client)
#   NO_SETTLE=1        skip the VACUUM ANALYZE and CHECKPOINT before each cell
#                      (autovacuum stays off for pgbench's tables either way)
#   PROXY_BINS="before=PATH after=PATH"
#                      instead of one kvproxy, these builds (each in
#                      passthrough on the mem KV driver), all in the same
#                      rotation, one row each: to compare builds side by side
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

if [[ -z "${KVPROXY_TEST_PG_DSN:-}" ]]; then
	exec env WITH_SERVERS=pg tests/harness/with-servers.sh bash "$0" "$@"
fi

DURATION=${DURATION:-20}
CLIENTS=${CLIENTS:-1 8 32}
BUILTINS=${BUILTINS:-S N}
for b in $BUILTINS; do
	case $b in
	S | N | SC | NC) ;;
	*) printf 'pgbench.bench: BUILTINS: %s is not one of S, N, SC, NC\n' "$b" >&2; exit 2 ;;
	esac
done
PGBENCH_MODE=${PGBENCH_MODE:-simple}
SCALE=${SCALE:-10}
ROUNDS=${ROUNDS:-10}
POOL=${POOL:-200}
STEP=$(( DURATION / ROUNDS ))
(( STEP >= 1 )) || STEP=1
BIN=$KVPROXY_TEST_PG_BINDIR
PG_PORT=${KVPROXY_TEST_PG_PORT:-$(sed -E 's|.*:([0-9]+)/.*|\1|' <<<"$KVPROXY_TEST_PG_DSN")}

log() { printf 'pgbench.bench: %s\n' "$*" >&2; }

free_port() {
	local p
	for _ in $(seq 1 200); do
		p=$((15000 + RANDOM % 17000)) # below the ephemeral range
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	log "no free port"
	exit 2
}

wait_port() {
	for _ in $(seq 1 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	log "nothing listens on $1"
	return 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvproxy-bench.XXXXXX")
chmod 755 "$WORK"
PGB_PID=""
# The proxies: NAMES[i] listens on PORTS[i] as PIDS[i].
NAMES=() PORTS=() PIDS=()
cleanup() {
	set +e
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	[[ -n "$PGB_PID" ]] && kill "$PGB_PID" 2>/dev/null
	[[ -n "${PGB_REAL:-}" ]] && kill "$PGB_REAL" 2>/dev/null
	sleep 0.2
	[[ -n "${KEEP_WORK:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT

# PgBouncer.
if ! command -v pgbouncer >/dev/null 2>&1 && [[ ! -x /usr/sbin/pgbouncer ]]; then
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
		log "installing pgbouncer"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
	else
		log "pgbouncer not found (apt-get install pgbouncer)"
		exit 2
	fi
fi
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
DB=bench_wire
"$BIN/psql" -X -q -d "$KVPROXY_TEST_PG_DSN" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
DIRECT="postgres://postgres@127.0.0.1:$PG_PORT/$DB?sslmode=disable"
log "pgbench -i -s $SCALE"
"$BIN/pgbench" -i -q -s "$SCALE" "$DIRECT" >/dev/null 2>&1
# PostgreSQL's background work lands on whichever target happens to run:
# an autovacuum of pgbench_accounts or a checkpoint in one 2 s round makes
# that round's ratio noise. Autovacuum is off for pgbench's tables, and
# each cell starts vacuumed and checkpointed (settle), so every target of
# a cell works on the same tables; -N's growth within a cell is spread
# over the targets by the rotation.
"$BIN/psql" -X -q -d "$DIRECT" \
	-c "ALTER TABLE pgbench_accounts SET (autovacuum_enabled = off)" \
	-c "ALTER TABLE pgbench_branches SET (autovacuum_enabled = off)" \
	-c "ALTER TABLE pgbench_tellers SET (autovacuum_enabled = off)" \
	-c "ALTER TABLE pgbench_history SET (autovacuum_enabled = off)" >/dev/null
settle() { "$BIN/psql" -X -q -d "$DIRECT" -c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null; }

# Each proxy runs in a session of its own (setsid), as PostgreSQL does
# (pg_ctl). With the kernel's autogroup scheduling, a session is a group
# that gets its share of the CPU as a whole, much as a service's cgroup does
# in production; left in this script's session, a proxy would share one
# group's share with pgbench and compete with it for the CPU.
AS_PG=()
if [[ $(id -u) -eq 0 ]]; then
	AS_PG=(runuser -u postgres --)
fi
echo '"postgres" ""' >"$WORK/users.txt"
for try in 1 2 3 4 5; do
	PGB_PORT=$(free_port)
	cat >"$WORK/pgbouncer.ini" <<INI
[databases]
$DB = host=127.0.0.1 port=$PG_PORT dbname=$DB user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/users.txt
pool_mode = session
max_client_conn = 500
default_pool_size = $POOL
logfile = $WORK/pgbouncer.log
${PGBOUNCER_INI:-}
INI
	[[ $(id -u) -eq 0 ]] && chown -R postgres "$WORK"
	setsid "${AS_PG[@]}" "$PGBOUNCER" "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
	PGB_PID=$!
	wait_port "$PGB_PORT" && break
	kill "$PGB_PID" 2>/dev/null || true
	PGB_PID=""
	log "pgbouncer did not start on $PGB_PORT (try $try)"
done
[[ -n "$PGB_PID" ]] || { tail -5 "$WORK/pgbouncer.log" >&2; exit 1; }

start_proxy() { # NAME CMD ({listen} and {upstream} replaced)
	local port cmd
	port=$(free_port)
	cmd=${2//\{listen\}/127.0.0.1:$port}
	cmd=${cmd//\{upstream\}/$DIRECT}
	log "proxy $1: $cmd"
	setsid bash -c "exec $cmd" >"$WORK/proxy-$1.log" 2>&1 &
	NAMES+=("$1") PORTS+=("$port") PIDS+=($!)
	wait_port "$port" || { cat "$WORK/proxy-$1.log" >&2; exit 1; }
}
KV_ARGS="serve --listen {listen} --upstream {upstream} --phase passthrough --kv-driver mem --admin-listen '' --log-level warn"
if [[ -n "${PROXY_BINS:-}" ]]; then
	for nb in $PROXY_BINS; do
		[[ "$nb" == *=* && -x "${nb#*=}" ]] || { log "PROXY_BINS: want NAME=PATH to an executable, got $nb"; exit 2; }
		start_proxy "${nb%%=*}" "env GOMAXPROCS=${PROXY_GOMAXPROCS:-1} $(realpath "${nb#*=}") $KV_ARGS"
	done
elif [[ -n "${PROXY_CMD:-}" ]]; then
	start_proxy kv "$PROXY_CMD"
elif [[ "${PROXY:-}" != passproxy && -x bin/kvproxy ]]; then
	start_proxy kv "env GOMAXPROCS=${PROXY_GOMAXPROCS:-1} $ROOT/bin/kvproxy $KV_ARGS --relay-upstream-pool $POOL"
else
	go build -o "$WORK/passproxy" ./wire/internal/passproxy
	prof=""
	[[ -n "${PROFILE:-}" ]] && prof="-cpuprofile $PROFILE"
	start_proxy kv "env GOMAXPROCS=${PROXY_GOMAXPROCS:-1} $WORK/passproxy -listen {listen} -upstream {upstream} $prof"
fi

# PgBouncer's own PID (runuser may sit in between) and the proxy's, for CPU.
PGB_REAL=$(pgrep -f "pgbouncer $WORK/pgbouncer.ini" | tail -1 || true)
PGB_REAL=${PGB_REAL:-$PGB_PID}
TCK=$(getconf CLK_TCK)

# cpu_ticks PID: user+system CPU of a process, in clock ticks.
cpu_ticks() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
	stat=${stat##*) }
	read -r -a f <<<"$stat"
	echo $(( f[11] + f[12] ))
}

# pgb_args BUILTIN: pgbench's options for one of BUILTINS ("-S", "-S -C").
pgb_args() {
	case $1 in
	?C) echo "-${1%C} -C" ;;
	*) echo "-$1" ;;
	esac
}

# run URL BUILTIN CLIENTS [PID] -> "tps latency_ms cpu_us_per_tx"
run() {
	local jobs=$(( $3 < 2 ? 1 : 2 ))
	local out c0=0 c1=0
	[[ -n "${4:-}" ]] && c0=$(cpu_ticks "$4")
	# shellcheck disable=SC2046 # pgb_args gives one or two options
	out=$("$BIN/pgbench" -n -M "$PGBENCH_MODE" $(pgb_args "$2") -c "$3" -j "$jobs" -T "$STEP" "$1" 2>&1) || { echo "$out" >&2; echo "0 0 0"; return; }
	[[ -n "${4:-}" ]] && c1=$(cpu_ticks "$4")
	local tps lat txs
	tps=$(sed -nE 's/^tps = ([0-9.]+).*/\1/p' <<<"$out" | head -1)
	lat=$(sed -nE 's/^latency average = ([0-9.]+) ms/\1/p' <<<"$out" | head -1)
	txs=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' <<<"$out" | head -1)
	echo "${tps:-0} ${lat:-0} $(awk -v d=$((c1 - c0)) -v t="${txs:-0}" -v k="$TCK" 'BEGIN{print (t > 0) ? d * 1e6 / k / t : 0}')"
}

# median VALUES...: the median of the arguments.
median() {
	printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# median_ci VALUES...: "lo hi", a distribution-free confidence interval of
# at least 95% for the median: the order statistics k and n+1-k, with k the
# largest for which P(Binomial(n, 1/2) < k) <= 2.5%. With fewer than six
# values there is none that narrow, and this is the whole range.
median_ci() {
	printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
		n = NR; k = 1; p = 0.5 ^ n; cum = p
		for (i = 1; i < n; i++) { p = p * (n - i + 1) / i; if (cum + p > 0.025) break; cum += p; k = i + 1 }
		print v[k], v[n + 1 - k]
	}'
}

PGB_URL="postgres://postgres@127.0.0.1:$PGB_PORT/$DB?sslmode=disable"
TARGETS=(direct pgbouncer "${NAMES[@]}")
declare -a ROWS
for s in $BUILTINS; do
	for c in $CLIENTS; do
		log "$(pgb_args "$s"), $c clients, ${ROUNDS}x${STEP}s each"
		[[ -n "${NO_SETTLE:-}" ]] || settle
		declare -A res=()
		nt=${#TARGETS[@]}
		for r in $(seq 0 $((ROUNDS - 1))); do
			for i in $(seq 0 $((nt - 1))); do
				k=$(((r + i) % nt))
				case $k in
				0) res[$k.$r]=$(run "$DIRECT" "$s" "$c") ;;
				1) res[$k.$r]=$(run "$PGB_URL" "$s" "$c" "$PGB_REAL") ;;
				*) res[$k.$r]=$(run "postgres://postgres@127.0.0.1:${PORTS[k - 2]}/$DB?sslmode=disable" "$s" "$c" "${PIDS[k - 2]}") ;;
				esac
			done
			line="round $((r + 1))/$ROUNDS TPS:"
			for k in $(seq 0 $((nt - 1))); do
				read -r t _ <<<"${res[$k.$r]}"
				line+=" ${TARGETS[k]} ${t%.*}"
			done
			log "$line"
		done
		# Per target: mean TPS, latency and CPU, then the median of its
		# per-round ratio to PgBouncer's TPS, with a confidence interval.
		for k in $(seq 0 $((nt - 1))); do
			vals=() ratios=()
			for r in $(seq 0 $((ROUNDS - 1))); do
				vals+=("${res[$k.$r]}")
				read -r bt _ <<<"${res[1.$r]}"
				read -r t _ <<<"${res[$k.$r]}"
				ratios+=("$(awk -v t="$t" -v b="$bt" 'BEGIN{print (b > 0) ? t / b : 0}')")
			done
			ROWS+=("$s $c ${TARGETS[k]} $(printf '%s\n' "${vals[@]}" | awk '{t += $1; l += $2; u += $3} END {print t / NR, l / NR, u / NR}') $(median "${ratios[@]}") $(median_ci "${ratios[@]}") $(printf '%s\n' "${ratios[@]}" | awk '$1 > 1 {w++} END {print w + 0}')")
		done
		unset res
	done
done

echo
echo "pgbench -M $PGBENCH_MODE, ${ROUNDS}x${STEP}s per target per cell, targets in a rotating order, scale $SCALE, loopback TCP, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %7s  %-10s | %10s %9s | %8s %12s %6s | %11s | %10s\n' script clients target tps lat_ms /pgb_med ci95 ahead +us_direct cpu_us/tx
direct_lat=0
for row in "${ROWS[@]}"; do
	read -r s c tg tps lat cpu med lo hi wins <<<"$row"
	[[ $tg == direct ]] && direct_lat=$lat
	awk -v s="$(pgb_args "$s")" -v c="$c" -v tg="$tg" -v tps="$tps" -v lat="$lat" -v cpu="$cpu" -v med="$med" -v lo="$lo" -v hi="$hi" -v w="$wins" -v n="$ROUNDS" -v dl="$direct_lat" 'BEGIN {
		printf "%-6s %7d  %-10s | %10.0f %9.3f | %8.2f %5.2f-%-6.2f %6s | %11.1f | %10s\n", s, c, tg, tps, lat, med, lo, hi, (tg == "pgbouncer") ? "-" : w "/" n, (lat - dl) * 1000, (tg == "direct") ? "-" : sprintf("%.1f", cpu)
	}'
done
echo "/pgb_med: median of the per-round ratios of a target's TPS to PgBouncer's"
echo "ci95: a confidence interval of at least 95% for that median (distribution-free; the whole range below 6 rounds)"
echo "ahead: rounds in which the target's TPS was above PgBouncer's"
echo "+us_direct: average latency over direct PostgreSQL's"
echo "cpu_us/tx: CPU time (user+system) of the proxy per transaction"
