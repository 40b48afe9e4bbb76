#!/usr/bin/env bash
# Runs every Go fuzz target in the module for FUZZTIME (default 60s) each.
set -euo pipefail
cd "$(dirname "$0")/../.."
FUZZTIME=${FUZZTIME:-60s}
found=0
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
		found=1
		echo "== $pkg $target ($FUZZTIME)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"
	done
done
[[ $found -eq 1 ]] || echo "no fuzz targets found"
