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
[[ -x $BIN ]] || go build -o "$BIN" ./cmd/kvproxy
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

# run LABEL CMD...: runs CMD under /usr/bin/time, prints "seconds maxrss_kib"
run() {
	local label=$1; shift
	local t0 t1
	t0=$(date +%s.%N)
	/usr/bin/time -f "%M" -o "$WORK/$label.rss" "$@" >"$WORK/$label.out" 2>"$WORK/$label.err" || {
		echo "$label failed:" >&2; tail -20 "$WORK/$label.err" >&2; return 1; }
	t1=$(date +%s.%N)
	echo "$(python3 -c "print($t1-$t0)") $(tail -1 "$WORK/$label.rss")"
}

printf '%-10s %-9s %12s %10s %12s %10s\n' driver step rows seconds rows/s rss_MiB
for d in $DRIVERS; do
	case $d in
	local) KVDSN=$WORK/kv-$d.db ;;
	postgres) KVDSN=$(newdb kv) ;;
	dynamodb) KVDSN="dynamodb://?endpoint=$KVPROXY_TEST_DYNAMODB_ENDPOINT&region=us-east-1&table=bench$$&create_table=true" ;;
	*) echo "unknown driver $d" >&2; exit 2 ;;
	esac
	common=(--upstream "$UP" --kv-driver "$d" --kv-dsn "$KVDSN" --log-level warn)
	read -r secs rss < <(run "bf-$d" "$BIN" backfill --include-orphans --page-size "$PAGE" --json "${common[@]}")
	copied=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sum(r["copied"].values()))' "$WORK/bf-$d.out")
	printf '%-10s %-9s %12d %10.1f %12.0f %10.1f  %s\n' "$d" backfill "$copied" "$secs" "$(python3 -c "print($copied/$secs)")" "$(python3 -c "print($rss/1024)")" \
		"$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("read=%.1fs write=%.1fs recheck=%.1fs" % (r["read_seconds"], r["write_seconds"], r["recheck_seconds"]))' "$WORK/bf-$d.out")"
	read -r secs rss < <(run "vf-$d" "$BIN" verify --include-orphans --page-size "$PAGE" --json "${common[@]}")
	matched=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sum(e["match"] for e in r["entities"].values()))' "$WORK/vf-$d.out")
	diffs=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sum(e["mismatch"]+e["missing_in_kv"]+e["extra_in_kv"] for e in r["entities"].values()))' "$WORK/vf-$d.out")
	printf '%-10s %-9s %12d %10.1f %12.0f %10.1f  differences=%s\n' "$d" verify "$matched" "$secs" "$(python3 -c "print($matched/$secs)")" "$(python3 -c "print($rss/1024)")" "$diffs"
done
echo "(rows generated: $ROWS)"
