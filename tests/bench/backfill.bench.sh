#!/usr/bin/env bash
# Backfill and verify throughput and peak RSS, in one run: a generated
# legacy database (tests/legacygen: 100 repositories, 100k commits, 10k
# branches, 1M staged entries at BACKFILL_SCALE=1) is backfilled by the real
# binary into each KV driver, then verified. Prints one table.
#
# Run by `make bench` inside tests/harness/with-servers.sh; run alone it
# re-executes itself under the harness. Environment:
#   BACKFILL_SCALE=1            size (0.1 = 10 repositories, 110k rows)
#   BACKFILL_DRIVERS="local postgres dynamodb"
#   BACKFILL_PAGE=5000          --page-size of both commands
#   BACKFILL_BINS="before=/path/a after=/path/b"
#                               compare binaries on the same generated
#                               database, in one session (default: bin/kvproxy)
# Targets (issue 7): backfill >= 50k rows/s into local and postgres-KV,
# verify >= 100k rows/s, peak RSS <= 256 MiB at any size.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

if [[ -z "${KVPROXY_TEST_PG_DSN:-}" ]]; then
	exec tests/harness/with-servers.sh bash "$0" "$@"
fi

SCALE=${BACKFILL_SCALE:-1}
DRIVERS=${BACKFILL_DRIVERS:-local postgres dynamodb}
PAGE=${BACKFILL_PAGE:-5000}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

BIN=$ROOT/bin/kvproxy
if [[ -z "${BACKFILL_BINS:-}" ]]; then
	[[ -x $BIN ]] || go build -o "$BIN" ./cmd/kvproxy
	BACKFILL_BINS="kvproxy=$BIN"
fi
go build -o "$WORK/legacygen" ./tests/legacygen/cmd/legacygen

dbdsn() { # dbdsn NAME: DSN of database NAME on the harness server
	python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p._replace(path="/"+sys.argv[2]).geturl())' "$KVPROXY_TEST_PG_DSN" "$1"
}
newdb() {
	local name=bench_$1_$$
	psql -q "$KVPROXY_TEST_PG_DSN" -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null
	dbdsn "$name"
}

UP=$(newdb legacy)
echo "generating (scale $SCALE)..." >&2
t0=$(date +%s.%N)
GEN=$("$WORK/legacygen" -dsn "$UP" -scale "$SCALE")
t1=$(date +%s.%N)
ROWS=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rows"])' "$GEN")
echo "generated $GEN in $(python3 -c "print(round($t1-$t0,1))")s" >&2

# The harness PostgreSQL's CPU seconds so far: the postmaster with its
# reaped children (cutime/cstime) plus the live ones. It serves both the
# upstream and the postgres KV store, so a run's delta is where the time
# not spent in kvproxy went.
PGDATA_DIR=$(psql -Atq "$KVPROXY_TEST_PG_DSN" -c 'SHOW data_directory')
PG_PID=$(head -1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true)
pgcpu() {
	python3 - "$PG_PID" <<'PY'
import os, sys
pid = sys.argv[1]
hz = os.sysconf("SC_CLK_TCK")
def st(p):
    try:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return sum(int(x) for x in f[11:15])  # utime stime cutime cstime
tot = st(pid) if pid else 0
if pid:
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                continue
            if ppid == pid:
                tot += st(p)
print(tot / hz)
PY
}

# run LABEL CMD...: runs CMD under /usr/bin/time, prints "seconds
# maxrss_kib cpu_seconds pg_cpu_seconds" (CMD's user+system CPU, and the
# harness PostgreSQL's meanwhile)
run() {
	local label=$1; shift
	local t0 t1 p0 p1
	p0=$(pgcpu)
	t0=$(date +%s.%N)
	/usr/bin/time -f "%M %U %S" -o "$WORK/$label.rss" "$@" >"$WORK/$label.out" 2>"$WORK/$label.err" || {
		echo "$label failed:" >&2; tail -20 "$WORK/$label.err" >&2; return 1; }
	t1=$(date +%s.%N)
	sleep 0.5 # let the command's backends exit and be reaped
	p1=$(pgcpu)
	read -r rss u s < <(tail -1 "$WORK/$label.rss")
	echo "$(python3 -c "print($t1-$t0)") $rss $(python3 -c "print(round($u+$s,1))") $(python3 -c "print(round($p1-$p0,1))")"
}

# profile LABEL: --cpu-profile FILE when BACKFILL_PROFILE_DIR is set and
# the binary knows the (hidden) flag
profile() {
	if [[ -n "${BACKFILL_PROFILE_DIR:-}" ]] && "$BIN" version --cpu-profile /dev/null >/dev/null 2>&1; then
		mkdir -p "$BACKFILL_PROFILE_DIR"
		echo --cpu-profile "$BACKFILL_PROFILE_DIR/$1.pprof"
	fi
}

printf '%-10s %-10s %-9s %12s %10s %12s %10s\n' binary driver step rows seconds rows/s rss_MiB
for d in $DRIVERS; do
for lb in $BACKFILL_BINS; do
	L=${lb%%=*} BIN=${lb#*=}
	case $d in
	local) KVDSN=$WORK/kv-$d-$L.db ;;
	postgres) KVDSN=$(newdb kv) ;;
	dynamodb) KVDSN="dynamodb://?endpoint=$KVPROXY_TEST_DYNAMODB_ENDPOINT&region=us-east-1&table=bench$$$L&create_table=true" ;;
	*) echo "unknown driver $d" >&2; exit 2 ;;
	esac
	common=(--upstream "$UP" --kv-driver "$d" --kv-dsn "$KVDSN" --log-level warn)
	read -r secs rss cpu pgc < <(run "bf-$d-$L" "$BIN" backfill $(profile "bf-$d-$L") --include-orphans --page-size "$PAGE" --json "${common[@]}")
	copied=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sum(r["copied"].values()))' "$WORK/bf-$d-$L.out")
	printf '%-10s %-10s %-9s %12d %10.1f %12.0f %10.1f  %s\n' "$L" "$d" backfill "$copied" "$secs" "$(python3 -c "print($copied/$secs)")" "$(python3 -c "print($rss/1024)")" \
		"$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("read=%.1fs write=%.1fs recheck=%.1fs" % (r["read_seconds"], r["write_seconds"], r["recheck_seconds"]))' "$WORK/bf-$d-$L.out") cpu=${cpu}s pg_cpu=${pgc}s"
	read -r secs rss cpu pgc < <(run "vf-$d-$L" "$BIN" verify $(profile "vf-$d-$L") --include-orphans --page-size "$PAGE" --json "${common[@]}")
	matched=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sum(e["match"] for e in r["entities"].values()))' "$WORK/vf-$d-$L.out")
	diffs=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sum(e["mismatch"]+e["missing_in_kv"]+e["extra_in_kv"] for e in r["entities"].values()))' "$WORK/vf-$d-$L.out")
	printf '%-10s %-10s %-9s %12d %10.1f %12.0f %10.1f  differences=%s\n' "$L" "$d" verify "$matched" "$secs" "$(python3 -c "print($matched/$secs)")" "$(python3 -c "print($rss/1024)")" "$diffs cpu=${cpu}s pg_cpu=${pgc}s"
	if [[ $d == local ]]; then rm -f "$KVDSN"; fi
done
done
echo "(rows generated: $ROWS)"
