#!/usr/bin/env bash
# pgbench through PostgreSQL directly, through PgBouncer (session mode) and
# through kvproxy in passthrough, over loopback TCP; prints one table.
#
# Run by `make bench` inside tests/harness/with-servers.sh; run alone it
# re-executes itself under the harness. Environment:
#   DURATION=20        seconds per pgbench run
#   CLIENTS="1 8 32"   client counts
#   SCRIPTS="S N"      pgbench built-ins: S select-only (-S), N simple-update (-N)
#   PGBENCH_MODE=simple  -M for every run (simple|extended|prepared)
#   SCALE=10           pgbench -i scale
#   ROUNDS=5           each DURATION is split into ROUNDS runs, interleaved
#                      direct/PgBouncer/kvproxy, so load changes on a shared
#                      machine hit all three alike. The order rotates from
#                      round to round: a fixed order would favour whichever
#                      target runs first while -N's tables grow. TPS and
#                      latency are averaged; kv/pgb_med is the median of the
#                      per-round ratios (PgBouncer and kvproxy run next to
#                      each other in every round), with their range.
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
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

if [[ -z "${KVPROXY_TEST_PG_DSN:-}" ]]; then
	exec env WITH_SERVERS=pg tests/harness/with-servers.sh bash "$0" "$@"
fi

DURATION=${DURATION:-20}
CLIENTS=${CLIENTS:-1 8 32}
SCRIPTS=${SCRIPTS:-S N}
PGBENCH_MODE=${PGBENCH_MODE:-simple}
SCALE=${SCALE:-10}
ROUNDS=${ROUNDS:-5}
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
PROXY_PID=""
cleanup() {
	set +e
	[[ -n "$PROXY_PID" ]] && kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null
	[[ -n "$PGB_PID" ]] && kill "$PGB_PID" 2>/dev/null
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
default_pool_size = 200
logfile = $WORK/pgbouncer.log
INI
	[[ $(id -u) -eq 0 ]] && chown -R postgres "$WORK"
	"${AS_PG[@]}" "$PGBOUNCER" "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
	PGB_PID=$!
	wait_port "$PGB_PORT" && break
	kill "$PGB_PID" 2>/dev/null || true
	PGB_PID=""
	log "pgbouncer did not start on $PGB_PORT (try $try)"
done
[[ -n "$PGB_PID" ]] || { tail -5 "$WORK/pgbouncer.log" >&2; exit 1; }

# kvproxy passthrough.
PROXY_PORT=$(free_port)
if [[ -z "${PROXY_CMD:-}" && "${PROXY:-}" != passproxy && -x bin/kvproxy ]]; then
	PROXY_CMD="env GOMAXPROCS=${PROXY_GOMAXPROCS:-1} $ROOT/bin/kvproxy serve --listen {listen} --upstream {upstream} --phase passthrough --kv-driver mem --admin-listen '' --log-level warn"
fi
if [[ -n "${PROXY_CMD:-}" ]]; then
	cmd=${PROXY_CMD//\{listen\}/127.0.0.1:$PROXY_PORT}
	cmd=${cmd//\{upstream\}/$DIRECT}
	log "proxy: $cmd"
	bash -c "exec $cmd" >"$WORK/proxy.log" 2>&1 &
else
	go build -o "$WORK/passproxy" ./wire/internal/passproxy
	prof=()
	[[ -n "${PROFILE:-}" ]] && prof=(-cpuprofile "$PROFILE")
	GOMAXPROCS=${PROXY_GOMAXPROCS:-1} "$WORK/passproxy" -listen "127.0.0.1:$PROXY_PORT" -upstream "$DIRECT" "${prof[@]}" >"$WORK/proxy.log" 2>&1 &
fi
PROXY_PID=$!
wait_port "$PROXY_PORT" || { cat "$WORK/proxy.log" >&2; exit 1; }

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

# run URL SCRIPT CLIENTS [PID] -> "tps latency_ms cpu_us_per_tx"
run() {
	local jobs=$(( $3 < 2 ? 1 : 2 ))
	local out c0=0 c1=0
	[[ -n "${4:-}" ]] && c0=$(cpu_ticks "$4")
	out=$("$BIN/pgbench" -n -M "$PGBENCH_MODE" "-$2" -c "$3" -j "$jobs" -T "$STEP" "$1" 2>&1) || { echo "$out" >&2; echo "0 0 0"; return; }
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

declare -a ROWS
PGB_URL="postgres://postgres@127.0.0.1:$PGB_PORT/$DB?sslmode=disable"
KV_URL="postgres://postgres@127.0.0.1:$PROXY_PORT/$DB?sslmode=disable"
TARGETS=(direct pgb kv)
for s in $SCRIPTS; do
	for c in $CLIENTS; do
		log "-$s, $c clients, ${ROUNDS}x${STEP}s each"
		declare -A tps=() lat=() cpu=()
		ratios=()
		for r in $(seq 0 $((ROUNDS - 1))); do
			for i in 0 1 2; do
				tg=${TARGETS[$(((r + i) % 3))]}
				case $tg in
				direct) read -r t l u < <(run "$DIRECT" "$s" "$c") ;;
				pgb) read -r t l u < <(run "$PGB_URL" "$s" "$c" "$PGB_REAL") ;;
				kv) read -r t l u < <(run "$KV_URL" "$s" "$c" "$PROXY_PID") ;;
				esac
				tps[$tg.$r]=$t lat[$tg.$r]=$l cpu[$tg.$r]=$u
			done
			ratios+=("$(awk -v k="${tps[kv.$r]}" -v b="${tps[pgb.$r]}" 'BEGIN{print (b > 0) ? k / b : 0}')")
		done
		row="$s $c"
		for tg in "${TARGETS[@]}"; do
			vals=()
			for r in $(seq 0 $((ROUNDS - 1))); do vals+=("${tps[$tg.$r]} ${lat[$tg.$r]} ${cpu[$tg.$r]}"); done
			row+=" $(printf '%s\n' "${vals[@]}" | awk '{t += $1; l += $2; u += $3} END {print t / NR, l / NR, u / NR}')"
		done
		sorted=$(printf '%s\n' "${ratios[@]}" | sort -g | tr '\n' ' ')
		read -r -a sr <<<"$sorted"
		row+=" $(median "${ratios[@]}") ${sr[0]} ${sr[-1]}"
		ROWS+=("$row")
		unset tps lat cpu
	done
done

echo
echo "pgbench -M $PGBENCH_MODE, ${ROUNDS}x${STEP}s interleaved per cell (order rotated), scale $SCALE, loopback TCP, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %7s | %10s %9s | %10s %9s | %10s %9s | %7s %7s %11s | %12s %13s | %10s %9s\n' script clients direct_tps lat_ms pgb_tps lat_ms kv_tps lat_ms kv/pgb kv/pgb_med range kv+us_direct pgb+us_direct pgb_cpu_us kv_cpu_us
for r in "${ROWS[@]}"; do
	read -r s c dt dl _ bt bl bc kt kl kc med lo hi <<<"$r"
	awk -v s="-$s" -v c="$c" -v dt="$dt" -v dl="$dl" -v bt="$bt" -v bl="$bl" -v kt="$kt" -v kl="$kl" -v bc="$bc" -v kc="$kc" -v med="$med" -v lo="$lo" -v hi="$hi" 'BEGIN {
		ratio = (bt > 0) ? kt / bt : 0
		printf "%-6s %7d | %10.0f %9.3f | %10.0f %9.3f | %10.0f %9.3f | %7.2f %7.2f %5.2f-%-5.2f | %12.1f %13.1f | %10.1f %9.1f\n", s, c, dt, dl, bt, bl, kt, kl, ratio, med, lo, hi, (kl - dl) * 1000, (bl - dl) * 1000, bc, kc
	}'
done
echo "kv/pgb: ratio of mean TPS; kv/pgb_med, range: median and range of the per-round ratios"
echo "pgb_cpu_us, kv_cpu_us: CPU time (user+system) of PgBouncer and of kvproxy per transaction"
