#!/usr/bin/env bash
# with-servers.sh CMD [ARGS...]
#
# Starts the servers kvproxy's tests need, runs CMD with their addresses in
# the environment, and stops them again however CMD ends:
#   - a throwaway PostgreSQL (initdb into a temp folder, pg_ctl on a free
#     loopback port, trust auth), as the postgres system user when run as root;
#   - a DynamoDB-compatible server (npm package dynalite, pinned, installed
#     into a cache folder) on a free loopback port.
#
# Exported to CMD:
#   KVPROXY_TEST_PG_DSN          superuser DSN of the throwaway PostgreSQL
#   KVPROXY_TEST_PG_BINDIR       its server binaries (pgbench, psql, ...)
#   KVPROXY_TEST_DYNAMODB_ENDPOINT  http://127.0.0.1:PORT of dynalite
#   KVPROXY_TEST_DYNALITE_CLI    dynalite's cli.js, for tests that run their own
#   KVPROXY_TEST_REQUIRE_SERVERS=1  tests fail (not skip) without a server
#
# WITH_SERVERS=pg or WITH_SERVERS=dynamodb starts only one of them.
set -euo pipefail

DYNALITE_VERSION=4.0.0
CACHE_DIR=${KVPROXY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kvproxy}
WITH_SERVERS=${WITH_SERVERS:-pg,dynamodb}

log() { printf 'with-servers: %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

free_port() {
	local p i
	for i in $(seq 1 200); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free loopback port found"
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvproxy-test.XXXXXX")
PG_BINDIR=""
PG_DATA=""
DYN_PID=""
AS_PG=()

cleanup() {
	local rc=$?
	set +e
	if [[ -n "$DYN_PID" ]]; then
		kill "$DYN_PID" 2>/dev/null
		wait "$DYN_PID" 2>/dev/null
	fi
	if [[ -n "$PG_DATA" && -f "$PG_DATA/postmaster.pid" ]]; then
		"${AS_PG[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

find_pg_bindir() {
	local d
	if command -v pg_config >/dev/null 2>&1; then
		d=$(pg_config --bindir 2>/dev/null || true)
		[[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
	fi
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		[[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
	done
	return 1
}

start_pg() {
	if ! PG_BINDIR=$(find_pg_bindir); then
		if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
			log "PostgreSQL server not found; installing the Debian package postgresql"
			DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
			PG_BINDIR=$(find_pg_bindir) || die "postgresql installed but initdb/pg_ctl not found"
		else
			die "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package 'postgresql' (apt-get install postgresql) or put pg_config on PATH"
		fi
	fi
	PG_DATA="$WORK/pgdata"
	mkdir -p "$PG_DATA"
	if [[ $(id -u) -eq 0 ]]; then
		id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
		chown -R postgres "$WORK"
		chmod 755 "$WORK"
		AS_PG=(runuser -u postgres --)
	fi
	"${AS_PG[@]}" "$PG_BINDIR/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" 2>&1 ||
		"${AS_PG[@]}" "$PG_BINDIR/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --no-locale >"$WORK/initdb.log" 2>&1 ||
		{ cat "$WORK/initdb.log" >&2; die "initdb failed"; }
	local port try
	for try in 1 2 3 4 5; do
		port=$(free_port)
		if "${AS_PG[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -w -t 60 -l "$WORK/pg.log" \
			-o "-p $port -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=600 -c shared_buffers=256MB -c max_locks_per_transaction=256" \
			start >/dev/null 2>&1; then
			export KVPROXY_TEST_PG_DSN="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
			export KVPROXY_TEST_PG_BINDIR="$PG_BINDIR"
			export KVPROXY_TEST_PG_PORT="$port"
			log "PostgreSQL $("$PG_BINDIR/postgres" --version | awk "{print \$3}") on 127.0.0.1:$port"
			return 0
		fi
		log "pg_ctl start on port $port failed (try $try)"
		tail -5 "$WORK/pg.log" >&2 || true
	done
	die "could not start PostgreSQL"
}

# dynalite rethrows a request's 'error' event (index.js: req.on('error',
# function (err) { throw err })), so one client that closes its connection in
# the middle of a request body ends the whole server, and with it every test
# still running. The DynamoDB client does exactly that when a context is
# cancelled while it sends. DynamoDB drops such a request; so does this
# wrapper, and any other uncaught error still ends the server, loudly.
write_dynalite_wrapper() {
	cat >"$1.tmp" <<'EOF'
process.on('uncaughtException', function (err) {
  if (err && err.code === 'ECONNRESET') {
    console.error('dynalite: dropped a request its client aborted:', err.message)
    return
  }
  console.error('dynalite: uncaught error:', err)
  process.exit(70)
})
require('./node_modules/dynalite/cli.js')
EOF
	mv "$1.tmp" "$1"
}

start_dynalite() {
	command -v node >/dev/null 2>&1 || die "node not found: install Node.js (apt-get install nodejs npm) to run the DynamoDB-compatible server"
	local dir="$CACHE_DIR/dynalite-$DYNALITE_VERSION"
	if [[ ! -f "$dir/node_modules/dynalite/cli.js" ]]; then
		log "installing dynalite@$DYNALITE_VERSION into $dir"
		mkdir -p "$dir"
		(cd "$dir" && npm install --no-audit --no-fund --loglevel=error "dynalite@$DYNALITE_VERSION" >/dev/null) ||
			die "npm install dynalite@$DYNALITE_VERSION failed"
	fi
	write_dynalite_wrapper "$dir/serve.js"
	local port try i
	for try in 1 2 3 4 5; do
		port=$(free_port)
		node "$dir/serve.js" --port "$port" --host 127.0.0.1 >"$WORK/dynalite.log" 2>&1 &
		DYN_PID=$!
		for i in $(seq 1 100); do
			if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
				export KVPROXY_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$port"
				export KVPROXY_TEST_DYNALITE_CLI="$dir/serve.js"
				log "dynalite $DYNALITE_VERSION on 127.0.0.1:$port"
				return 0
			fi
			kill -0 "$DYN_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill "$DYN_PID" 2>/dev/null || true
		wait "$DYN_PID" 2>/dev/null || true
		DYN_PID=""
		log "dynalite did not start on port $port (try $try)"
	done
	cat "$WORK/dynalite.log" >&2
	die "could not start dynalite"
}

[[ $# -gt 0 ]] || die "usage: with-servers.sh CMD [ARGS...]"
[[ ",$WITH_SERVERS," == *",pg,"* ]] && start_pg
[[ ",$WITH_SERVERS," == *",dynamodb,"* ]] && start_dynalite
export KVPROXY_TEST_REQUIRE_SERVERS=1
# Fake credentials: dynalite checks that requests are signed, not by whom.
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-kvproxy-test}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-kvproxy-test}
export AWS_REGION=${AWS_REGION:-us-east-1}

# Run CMD as a child (not exec) so the EXIT trap stops the servers.
set +e
"$@"
rc=$?
set -e
# A server that died in the middle of the run fails every test after it with
# "connection refused"; say which one, and what it printed last.
if [[ -n "$DYN_PID" ]] && ! kill -0 "$DYN_PID" 2>/dev/null; then
	log "dynalite exited during the run; the last of its output:"
	tail -20 "$WORK/dynalite.log" >&2 || true
	[[ $rc -ne 0 ]] || rc=2
fi
if [[ -n "$PG_DATA" ]] && ! "${AS_PG[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
	log "PostgreSQL exited during the run; the last of its log:"
	tail -20 "$WORK/pg.log" >&2 || true
	[[ $rc -ne 0 ]] || rc=2
fi
exit "$rc"
