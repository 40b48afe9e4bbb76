#!/usr/bin/env bash
# make bench: Go benchmarks of every package, then each comparison script
# tests/bench/*.bench.sh. Runs inside tests/harness/with-servers.sh, so the
# throwaway PostgreSQL and dynalite are up. BENCH selects Go benchmarks,
# BENCHTIME sets -benchtime, SCRIPTS selects scripts (glob, default all).
set -euo pipefail
cd "$(dirname "$0")/../.."
BENCH=${BENCH:-.}
BENCHTIME=${BENCHTIME:-1s}
echo "== Go benchmarks"
# -p 1: one package's benchmarks at a time, so that no two packages share
# the cores while they measure.
go test -p 1 -run '^$' -bench "$BENCH" -benchtime "$BENCHTIME" -benchmem ./...
for s in tests/bench/${SCRIPTS:-*}.bench.sh; do
	[[ -e "$s" ]] || continue
	echo "== $s"
	bash "$s"
done
