#!/usr/bin/env bash
# Peer benchmark: PostgreSQL commit latency and throughput with a synchronous standby.
#
# What it measures: durable single-row INSERTs (one transaction each) into a PostgreSQL
# primary whose commits wait for a synchronous standby on the same machine
# (synchronous_standby_names = 'FIRST 1 (standby1)', synchronous_commit = on, i.e. each
# commit returns once the WAL is fsynced on the primary and flushed on the standby).
# Cases: 100 B and 4096 B records of random (incompressible) bytes, 1 client and 64
# clients (pgbench -j 2), PG_DURATION seconds each (default 10, --quick: 3), after a
# short warm-up. Reported: tps (pgbench's summary) and commit latency p50 / p99 / p99.9
# in µs (from pgbench's per-transaction log). For context, the script also times a
# 4 KiB O_DSYNC overwrite loop (dd) on the same file system before and after the cases;
# logship's own benchmark (bench/README.md) measures the raw limits properly.
#
# Run (needs root: installs the `postgresql` OS package with apt-get, then runs the
# servers as the `postgres` user):
#
#   bash bench/peers/postgres.sh [--quick] [--json FILE]
#
# Environment: PG_DURATION (seconds per case, default 10), PG_PRIMARY_PORT (default
# 55432), PG_STANDBY_PORT (default 55433), TMPDIR (where the temporary clusters go; the
# file system measured). Everything lives in a mktemp -d directory that is removed at
# exit; both servers are stopped at exit, also on error or Ctrl-C.

set -euo pipefail

usage() { echo "usage: bash bench/peers/postgres.sh [--quick] [--json FILE]" >&2; exit 2; }

QUICK=0
JSON_OUT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --json) [[ $# -ge 2 ]] || usage; JSON_OUT="$2"; shift 2 ;;
        -h|--help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
done

DURATION="${PG_DURATION:-10}"
WARMUP=2
if [[ $QUICK -eq 1 ]]; then DURATION=3; WARMUP=1; fi
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || { echo "PG_DURATION must be a positive integer" >&2; exit 2; }

if [[ $(id -u) -ne 0 ]]; then
    echo "this script needs root (apt-get install, runuser -u postgres)" >&2
    exit 1
fi

# The JSON path is resolved now: the script later works in its temporary directory.
if [[ -n "$JSON_OUT" ]]; then
    JSON_OUT="$(cd "$(dirname -- "$JSON_OUT")" && pwd)/$(basename -- "$JSON_OUT")"
fi

START_EPOCH=$(date +%s)

# ---------------------------------------------------------------- install
export DEBIAN_FRONTEND=noninteractive
echo "== apt-get update && apt-get install postgresql" >&2
apt-get update -qq >&2
# --no-upgrade: if PostgreSQL is already installed, leave the installed version alone.
apt-get install -y -qq --no-upgrade postgresql >&2

BIN=""
while IFS= read -r d; do
    if [[ -x "$d/initdb" && -x "$d/pgbench" && -x "$d/pg_basebackup" ]]; then BIN="$d"; fi
done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
[[ -n "$BIN" ]] || { echo "no PostgreSQL binaries under /usr/lib/postgresql/*/bin" >&2; exit 1; }
id postgres >/dev/null 2>&1 || { echo "no 'postgres' user (the package should create it)" >&2; exit 1; }

# ---------------------------------------------------------------- ports
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() { # $1 = explicit value or empty, $2 = default, $3 = port to avoid
    local p
    if [[ -n "$1" ]]; then
        [[ "$1" =~ ^[0-9]+$ ]] || { echo "bad port: $1" >&2; return 1; }
        if port_busy "$1" || [[ "$1" == "$3" ]]; then echo "port $1 is in use" >&2; return 1; fi
        echo "$1"; return 0
    fi
    for ((p = $2; p < $2 + 100; p++)); do
        if [[ "$p" != "$3" ]] && ! port_busy "$p"; then echo "$p"; return 0; fi
    done
    echo "no free port in $2..$(($2 + 99))" >&2
    return 1
}
PPORT=$(pick_port "${PG_PRIMARY_PORT:-}" 55432 "")
SPORT=$(pick_port "${PG_STANDBY_PORT:-}" 55433 "$PPORT")

# ---------------------------------------------------------------- temp dir, cleanup
TMP=$(mktemp -d -t logship-pg-peer.XXXXXX)
PRIMARY="$TMP/primary"
STANDBY="$TMP/standby"
LOGS="$TMP/pgbench-logs"
PRIMARY_PID=""
STANDBY_PID=""
CHILD=""  # the bounded pgbench currently running, if any

as_pg() { runuser -u postgres -- "$@"; }

stop_server() { # $1 = data dir, $2 = postmaster PID recorded at start (may be empty)
    local dir="$1" pid="$2" i
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    timeout 30 runuser -u postgres -- "$BIN/pg_ctl" stop -D "$dir" -m immediate -w -t 20 >/dev/null 2>&1
    # Fallback, only for the very process this script started (its PID from postmaster.pid).
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -QUIT "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    # A pgbench still running (interrupted case): stop the `timeout` this script started,
    # which passes the signal on to runuser and pgbench.
    [[ -n "$CHILD" ]] && kill -TERM "$CHILD" 2>/dev/null
    stop_server "$STANDBY" "$STANDBY_PID"
    stop_server "$PRIMARY" "$PRIMARY_PID"
    if [[ -n "$CHILD" ]]; then  # runuser takes up to 2 s to pass a TERM on
        for ((i = 0; i < 50; i++)); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.1; done
    fi
    if [[ $rc -ne 0 ]]; then
        for f in "$PRIMARY.log" "$STANDBY.log"; do
            [[ -f "$f" ]] && { echo "---- last lines of $(basename "$f")" >&2; tail -n 20 "$f" >&2; }
        done
    fi
    cd /
    rm -rf -- "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

chown postgres:postgres "$TMP"
chmod 0700 "$TMP"
cd "$TMP"
as_pg mkdir "$LOGS"

FSTYPE=$(df -PT "$TMP" | awk 'NR == 2 { print $2 }')
if [[ "$FSTYPE" == "tmpfs" ]]; then
    echo "WARNING: $TMP is on tmpfs: fsync reaches no disk; set TMPDIR to a disk-backed directory" >&2
fi

# ---------------------------------------------------------------- clusters
postmaster_pid() { head -n 1 "$1/postmaster.pid"; }

# psql against the primary; every call is bounded (a lost standby would block commits forever).
psql_p() {
    timeout 60 runuser -u postgres -- "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
        -h "$TMP" -p "$PPORT" -U postgres -d postgres "$@"
}

echo "== initdb primary (port $PPORT), pg_basebackup standby (port $SPORT) in $TMP" >&2
as_pg "$BIN/initdb" -D "$PRIMARY" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
cat >>"$PRIMARY/postgresql.conf" <<EOF

# ---- logship peer benchmark
listen_addresses = '127.0.0.1'
port = $PPORT
unix_socket_directories = '$TMP'
wal_level = replica
max_wal_senders = 4
fsync = on
synchronous_commit = on
synchronous_standby_names = 'FIRST 1 (standby1)'
max_connections = 100
EOF
as_pg "$BIN/pg_ctl" start -D "$PRIMARY" -l "$PRIMARY.log" -w -t 60 >/dev/null
PRIMARY_PID=$(postmaster_pid "$PRIMARY")

as_pg "$BIN/pg_basebackup" -h "$TMP" -p "$PPORT" -U postgres -D "$STANDBY" -R -X stream -c fast
# Later lines win: the standby's own port, and a primary_conninfo naming it standby1.
cat >>"$STANDBY/postgresql.conf" <<EOF

# ---- standby
port = $SPORT
EOF
cat >>"$STANDBY/postgresql.auto.conf" <<EOF
primary_conninfo = 'host=127.0.0.1 port=$PPORT user=postgres application_name=standby1'
EOF
as_pg "$BIN/pg_ctl" start -D "$STANDBY" -l "$STANDBY.log" -w -t 60 >/dev/null
STANDBY_PID=$(postmaster_pid "$STANDBY")

echo "== waiting for standby1 to be a synchronous standby" >&2
SYNC_OK=0
for ((i = 0; i < 600; i++)); do  # at most 60 s
    st=$(psql_p -c "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1' AND state = 'streaming'" || true)
    if [[ "$st" == "sync" ]]; then SYNC_OK=1; break; fi
    sleep 0.1
done
[[ $SYNC_OK -eq 1 ]] || { echo "standby1 did not become synchronous within 60 s" >&2; exit 1; }

VERSION_FULL=$(psql_p -c "SHOW server_version")
VERSION=${VERSION_FULL%% *}
REPL=$(psql_p -F ' ' -c "SELECT 'application_name=' || application_name, 'state=' || state, 'sync_state=' || sync_state, 'sync_priority=' || sync_priority FROM pg_stat_replication")
SETTINGS=$(psql_p -F '=' -c "SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit','synchronous_standby_names','fsync','wal_sync_method','full_page_writes','wal_level','wal_compression','shared_buffers','max_wal_size','checkpoint_timeout') ORDER BY name" | paste -sd ' ')

# ---------------------------------------------------------------- schema and payloads
psql_p <<'EOF'
CREATE TABLE log (payload bytea NOT NULL);
ALTER TABLE log ALTER COLUMN payload SET STORAGE PLAIN;
EOF

# Hex of N random bytes, as a bytea literal ('\x...'); pgbench sends it as the bound
# parameter of the prepared INSERT, so every transaction inserts exactly N bytes that
# no compressor can shrink (and STORAGE PLAIN rules out compression and TOAST anyway).
payload_literal() { printf '\\x%s' "$(head -c "$1" /dev/urandom | od -An -v -tx1 | tr -d ' \n')"; }

SCRIPT="$TMP/insert.sql"
echo 'INSERT INTO log (payload) VALUES (:payload);' >"$SCRIPT"
chown postgres:postgres "$SCRIPT"

# ---------------------------------------------------------------- raw context
# Mean latency of a 4 KiB O_DSYNC overwrite (write + data sync per write) on a
# prewritten file in the same directory as the clusters.
raw_dsync() {
    local f="$TMP/raw.dat" n=2000 t0 t1 us
    head -c $((4096 * n)) /dev/zero >"$f"
    sync -f "$f" 2>/dev/null || sync
    t0=$(date +%s%N)
    timeout 60 dd if=/dev/zero of="$f" bs=4096 count=$n oflag=dsync conv=notrunc status=none
    t1=$(date +%s%N)
    rm -f "$f"
    us=$(( (t1 - t0) / 1000 / n ))
    echo "raw 4 KiB O_DSYNC overwrite (dd, $n writes, $1): mean ${us} µs/write, $(( n * 1000000000 / (t1 - t0) )) writes/s"
}

# ---------------------------------------------------------------- cases
# Nearest-rank percentiles of the per-transaction latencies (column 3, µs) of the
# pgbench log files given as arguments; prints "p50 p99 p999".
percentiles() {
    awk '$3 ~ /^[0-9]+$/ { print $3 }' "$@" | sort -n | awk '
        { v[NR] = $1 }
        function pick(p,   i) { i = int(NR * p); if (i < NR * p) i++; if (i < 1) i = 1; return v[i] }
        END { if (NR == 0) { print "0 0 0"; exit } print pick(0.50), pick(0.99), pick(0.999) }'
}

ROWS=()
JSON_ITEMS=()

# pgbench -T $1 with output to file $2, bounded by `timeout` (a commit waiting for a lost
# standby would never return). Run in the background and waited for, so that Ctrl-C or
# TERM reaches the script's trap at once (`timeout` puts itself in its own process group,
# out of reach of the terminal's Ctrl-C) and the trap stops it.
pgbench_bounded() {
    local secs="$1" outfile="$2" rc=0
    shift 2
    timeout $((secs + 60)) runuser -u postgres -- "$BIN/pgbench" -T "$secs" "$@" >"$outfile" 2>&1 &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

run_case() { # $1 = record bytes, $2 = clients
    local size="$1" clients="$2" threads payload prefix out tps lat p50 p99 p999 name
    threads=$(( clients < 2 ? clients : 2 ))
    name="postgresql::insert/size=$size,clients=$clients"
    payload=$(payload_literal "$size")
    prefix="$LOGS/s${size}_c${clients}"

    psql_p -c "TRUNCATE log" -c "CHECKPOINT"
    local common=(-n -M prepared -f "$SCRIPT" -c "$clients" -j "$threads" -D "payload=$payload"
                  -h "$TMP" -p "$PPORT" -U postgres postgres)

    echo "== $name: warm-up ${WARMUP}s, then ${DURATION}s" >&2
    pgbench_bounded "$WARMUP" "$TMP/warmup.out" "${common[@]}" || { cat "$TMP/warmup.out" >&2; return 1; }
    pgbench_bounded "$DURATION" "$TMP/pgbench.out" -l --log-prefix="$prefix" "${common[@]}" \
        || { cat "$TMP/pgbench.out" >&2; return 1; }
    out=$(cat "$TMP/pgbench.out")

    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | tail -n 1)
    [[ -n "$tps" ]] || { echo "$out" >&2; echo "no tps in pgbench output" >&2; return 1; }
    tps=$(printf '%.0f' "$tps")
    lat=$(percentiles "$prefix".*)
    read -r p50 p99 p999 <<<"$lat"
    # Sanity: the table must hold exactly the inserted rows' payloads of the right size.
    local chk
    chk=$(psql_p -c "SELECT count(*) FILTER (WHERE octet_length(payload) <> $size) FROM log")
    [[ "$chk" == "0" ]] || { echo "unexpected payload sizes in log: $chk rows" >&2; return 1; }
    rm -f "$prefix".*

    ROWS+=("| $name | $clients | $size B | $tps | $p50 | $p99 | $p999 |")
    JSON_ITEMS+=("{\"system\":\"postgresql\",\"version\":\"$VERSION\",\"clients\":$clients,\"record_bytes\":$size,\"tps\":$tps,\"p50_us\":$p50,\"p99_us\":$p99,\"p999_us\":$p999}")
}

RAW_BEFORE=$(raw_dsync "before the cases")
for size in 100 4096; do
    for clients in 1 64; do
        run_case "$size" "$clients"
    done
done
RAW_AFTER=$(raw_dsync "after the cases")

# Still synchronous at the end? (If not, the figures above would not be sync-commit figures.)
END_SYNC=$(psql_p -c "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'")

# ---------------------------------------------------------------- report
echo
echo "PostgreSQL $VERSION_FULL ($BIN), primary + synchronous standby on 127.0.0.1:$PPORT/$SPORT"
echo "settings: $SETTINGS"
echo "replication: $REPL (at the end: sync_state=$END_SYNC)"
echo "directory: $TMP on $FSTYPE ($(df -P "$TMP" | awk 'NR == 2 { print $1 }')), $(nproc) CPUs, $(uname -sr)"
echo "each case: ${WARMUP}s warm-up, then pgbench -T $DURATION -M prepared, one INSERT per transaction"
echo "$RAW_BEFORE"
echo "$RAW_AFTER"
echo
echo "| case | clients | record | tps | p50 µs | p99 µs | p99.9 µs |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${ROWS[@]}"

if [[ -n "$JSON_OUT" ]]; then
    { printf '[\n'; local_sep=""
      for item in "${JSON_ITEMS[@]}"; do printf '%s  %s' "$local_sep" "$item"; local_sep=$',\n'; done
      printf '\n]\n'; } >"$JSON_OUT"
    echo
    echo "JSON written to $JSON_OUT"
fi
echo "wall time: $(( $(date +%s) - START_EPOCH )) s"
