#!/usr/bin/env bash
# Write pause seen by clients during cutover and rollback under load, with
# three proxy instances on a shared postgres KV store (issue 8; target: p99
# <= 1s). Prints one table: write latency away from switches, and of the
# writes in flight during cutovers and during rollbacks.
#
# Run by `make bench` inside tests/harness/with-servers.sh; run alone it
# re-executes itself under the harness. SWITCH_BENCH_ROUNDS (default 5)
# cutover/rollback pairs.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ -z "${KVPROXY_TEST_PG_DSN:-}" ]]; then
	exec tests/harness/with-servers.sh bash "$0" "$@"
fi
SWITCH_BENCH=1 go test -count=1 -timeout 20m -run '^TestSwitchWritePause$' -v ./tests/e2e/ |
	sed -n '/^write latency seen/,/^target missed\|^--- /p' | grep -v '^--- '
