#!/usr/bin/env bash
# Drain benchmark (issue 5): how fast does one veil-node drain a backlog of
# >= 100k releases from its outbox once the aggregator comes back, and how
# much memory does the node use while doing so.
#
# Usage: drain_bench.sh BIN_DIR            (BIN_DIR holds veil, veil-node, veil-aggregator)
# Env:   WORK (default ./drainbench-run: deleted and recreated), DURATION (15h of
#        simulated event), ATTENDEES (500 per venue), WARMUP_MIN (10 simulated
#        minutes fed while the aggregator is up), TARGET (100000).
#
# Procedure
#  1. `veil demo --out WORK/demo` for a dev PKI and the arena policy.
#  2. Bench policy = arena policy with budget.epsilon_per_day = 100000 (the
#     maximum): with lease_windows = 1440 the node leases 1440 windows per
#     metric up front, which the stock 2500/day budget cannot cover (refused as
#     exhausted, and those metrics then are not released at all).
#  3. Events: `veil-node simulate` of an arena AND a conference (8 + 8 zones,
#     disjoint names), merged by time, starting yesterday 00:00Z (one UTC day,
#     so one set of leases; in the past, so no future-skew refusals; far
#     younger than max_window_age). One arena node releases 59 per 1-minute
#     window, so one lease (1440 windows) could never cover 100k releases; 16
#     zones give 117 per window, 15 h = 900 windows = 105,300 releases.
#  4. Fresh aggregator; node reads a FIFO; feed the first WARMUP_MIN minutes;
#     wait until every leased metric holds its lease and the outbox is empty;
#     SIGTERM the aggregator; feed the rest, close the input; wait until intake
#     is finished (all lines read, outbox depth stable).
#  5. Restart the aggregator; time until the node exits (it exits once the
#     input has ended and the outbox is drained), polling `veil-node status`
#     every 0.5 s; sample the node's VmRSS/VmHWM and CPU every 0.2 s.
#  6. Check exactly-once in the aggregator DB.
set -euo pipefail

BIN=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
WORK=${WORK:-$PWD/drainbench-run}
DURATION=${DURATION:-15h}
ATTENDEES=${ATTENDEES:-500}
WARMUP_MIN=${WARMUP_MIN:-10}
TARGET=${TARGET:-100000}

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
die() { log "FAIL: $*"; exit 1; }

AGG_PID= NODE_PID= SAMPLER_PID=
cleanup() {
    exec 3>&- || true
    for p in $SAMPLER_PID $NODE_PID $AGG_PID; do
        kill -TERM "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT

rm -rf "$WORK"
mkdir -p "$WORK/agg"
cd "$WORK"

# --- 1. PKI + policy from the demo ---------------------------------------
log "demo (PKI, policy)"
"$BIN/veil" demo --out "$WORK/demo" --duration 10m --attendees 2000 --nodes 1 > demo.log 2>&1
cp -r demo/pki pki
sed 's/^epsilon_per_day = .*/epsilon_per_day = 100000.0/' demo/policy.toml > policy-bench.toml
"$BIN/veil-aggregator" policy check policy-bench.toml > policy-check.log

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PORT=$(free_port)
MPORT=$(free_port)

cat > aggregator.toml <<EOF
listen = "127.0.0.1:$PORT"
database = "sqlite://agg/aggregator.db"

[tls]
ca = "pki/ca.pem"
cert = "pki/server.pem"
key = "pki/server.key"

[audit]
signing_key = "pki/audit.key"

[[venue]]
name = "arena"
nodes = ["node-1"]
policy = "policy-bench.toml"
EOF

GATES="gate-a gate-b gate-c registration-a registration-b"
ROOMS="concourse merch floor stands-lower stands-upper hall cafe auditorium room-1 room-2 room-3"
{
    cat <<EOF
venue = "arena"
node_id = "node-1"

[aggregator]
endpoint = "https://127.0.0.1:$PORT"
server_name = "localhost"
ca = "pki/ca.pem"
cert = "pki/node-1.pem"
key = "pki/node-1.key"
max_backoff = "250ms"

[input]
path = "-"

[windows]
length = "1m"
lateness = "30s"

[privacy]
max_events_per_window = 1
max_zones_per_window = 1
lease_windows = 1440

[outbox]
path = "node-outbox.db"

[metrics]
listen = "127.0.0.1:$MPORT"
EOF
    for z in $GATES; do printf '\n[[zone]]\nname = "%s"\ngate = true\ncameras = 0\n' "$z"; done
    for z in $ROOMS; do printf '\n[[zone]]\nname = "%s"\ngate = false\ncameras = 1\n' "$z"; done
} > node.toml

# --- 3. events ---------------------------------------------------------------
START=$(date -u -d 'yesterday' +%Y-%m-%dT00:00:00Z)
log "simulating arena + conference, $DURATION from $START, $ATTENDEES attendees each"
"$BIN/veil-node" simulate --venue arena --seed 1 --duration "$DURATION" --attendees "$ATTENDEES" \
    --start "$START" --out ev-arena.jsonl 2>> simulate.log
"$BIN/veil-node" simulate --venue conference --seed 2 --duration "$DURATION" --attendees "$ATTENDEES" \
    --start "$START" --out ev-conference.jsonl 2>> simulate.log
LC_ALL=C sort -m ev-arena.jsonl ev-conference.jsonl > events.jsonl
rm ev-arena.jsonl ev-conference.jsonl
CUT=$(date -u -d "$START + $WARMUP_MIN minutes" +%Y-%m-%dT%H:%M:%S)
awk -v c="$CUT" 'BEGIN { p = 1 }
    p && index($0, "{\"ts\":\"") == 1 && substr($0, 8, 19) >= c { p = 0 }
    { print > (p ? "part1.jsonl" : "part2.jsonl") }' events.jsonl
TOTAL_LINES=$(wc -l < events.jsonl)
P1_LINES=$(wc -l < part1.jsonl)
rm events.jsonl
log "events: $TOTAL_LINES lines, $P1_LINES before $CUT"

# --- helpers -------------------------------------------------------------------
start_aggregator() {
    "$BIN/veil-aggregator" --log-format json serve --config aggregator.toml >> agg.out 2>> agg.err &
    AGG_PID=$!
    echo "$AGG_PID" > agg.pid
    local i
    for i in $(seq 200); do
        grep -q "listening on" agg.out 2>/dev/null && [ "$(grep -c 'listening on' agg.out)" -ge "$1" ] && return 0
        sleep 0.05
    done
    die "aggregator did not start (see $WORK/agg.err)"
}
stop_aggregator() {
    kill -TERM "$AGG_PID"
    wait "$AGG_PID" || die "aggregator exit status $?"
    AGG_PID=
}
status_val() { "$BIN/veil-node" status --config node.toml 2>/dev/null | awk -v k="$1" '$1 == k { print $2 }' | tail -1; }
metric() { curl -s "http://127.0.0.1:$MPORT/metrics" | awk -v k="$1" '$1 ~ "^"k { s += $2 } END { print s + 0 }'; }
sql() { sqlite3 -batch "$1" "$2"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# --- 4. build the backlog --------------------------------------------------------
start_aggregator 1
mkfifo input.fifo
exec 3<> input.fifo   # held open read-write: the node sees EOF only when we close it
"$BIN/veil-node" --log-format json run --config node.toml < input.fifo > node.out 2> node.err 3>&- &
NODE_PID=$!
T_NODE_START=$(now)

# node RSS / CPU and aggregator CPU every 0.2 s: t rss_kib hwm_kib node_ticks agg_ticks
(
    while [ -d "/proc/$NODE_PID" ]; do
        r=$(awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 } END { print r, h }' "/proc/$NODE_PID/status" 2>/dev/null) || break
        echo "$(now) $r $(cpu_ticks "$NODE_PID") $(cpu_ticks "$(cat agg.pid)")"
        sleep 0.2
    done
) > rss.log 3>&- &
SAMPLER_PID=$!

log "warm-up: feeding $P1_LINES lines with the aggregator up"
cat part1.jsonl >&3
LEASED_METRICS=$(grep -c '^mechanism = "discrete_laplace"' policy-bench.toml)
for i in $(seq 600); do
    lines=$(metric veil_node_input_lines_total)
    leases=$(sql agg/aggregator.db "SELECT count(*) FROM leases" 2>/dev/null || echo 0)
    depth=$(status_val outbox_depth)
    last=$(status_val last_upload)
    if [ "$lines" -ge "$P1_LINES" ] && [ "$leases" -ge "$LEASED_METRICS" ] && [ "$depth" = 0 ] && [ "$last" != "-" ]; then
        break
    fi
    [ "$i" = 600 ] && die "warm-up did not finish: lines $lines leases $leases depth $depth last_upload $last"
    sleep 0.5
done
WARM_UPLOADED=$(sql agg/aggregator.db "SELECT count(*) FROM releases")
log "warm-up done: $leases leases, $WARM_UPLOADED releases uploaded; stopping the aggregator"
stop_aggregator

T_FEED=$(now)
log "feeding the rest with the aggregator down"
cat part2.jsonl >&3
exec 3>&-
prev=-1 stable=0
while :; do
    lines=$(metric veil_node_input_lines_total)
    depth=$(status_val outbox_depth)
    if [ "$lines" -ge "$TOTAL_LINES" ] && [ "$depth" = "$prev" ]; then
        stable=$((stable + 1))
        [ "$stable" -ge 6 ] && break
    else
        stable=0
    fi
    prev=$depth
    kill -0 "$NODE_PID" 2>/dev/null || die "node exited while the aggregator was down"
    sleep 0.5
done
T_BACKLOG=$(now)
BACKLOG=$(status_val outbox_depth)
RELEASED=$(metric veil_node_releases_total)
EXHAUSTED=$(metric veil_node_budget_exhausted_releases_total)
log "backlog $BACKLOG releases (node released $RELEASED in total, $EXHAUSTED budget-exhausted), built in $(echo "$T_BACKLOG - $T_FEED" | bc) s"
[ "$BACKLOG" -ge "$TARGET" ] || die "backlog $BACKLOG < $TARGET: raise DURATION"
"$BIN/veil-node" status --config node.toml > status-before-drain.txt 2>&1 || true

# --- 5. drain --------------------------------------------------------------------
T0=$(now)
start_aggregator 2
T_LISTEN=$(now)
log "aggregator restarted; draining"
: > depth.log
T_FIRST=
while kill -0 "$NODE_PID" 2>/dev/null; do
    d=$(status_val outbox_depth)
    t=$(now)
    echo "$t ${d:-?}" >> depth.log
    if [ -z "$T_FIRST" ] && [ -n "$d" ] && [ "$d" -lt "$BACKLOG" ]; then T_FIRST=$t; fi
    sleep 0.5
done
wait "$NODE_PID" || die "node exit status $?"
T_END=$(now)
NODE_PID=
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=
"$BIN/veil-node" status --config node.toml > status-after-drain.txt 2>&1 || true
AFTER_DEPTH=$(awk '$1 == "outbox_depth" { print $2 }' status-after-drain.txt | tail -1)

# --- 6. exactly once -----------------------------------------------------------------
STORED=$(sql agg/aggregator.db "SELECT count(*) FROM releases")
DISTINCT=$(sql agg/aggregator.db "SELECT count(DISTINCT idempotency_key) FROM releases")
PRODUCED=$(sql node-outbox.db "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
AUDIT=$(sql agg/aggregator.db "SELECT a || '=' || count(*) FROM (SELECT json_extract(entry, '$.action') AS a FROM audit_log) WHERE a LIKE 'release%' GROUP BY a" | tr '\n' ' ')
AGG_TICKS_DRAIN=$(cpu_ticks "$AGG_PID")   # this aggregator process started at T0
stop_aggregator
read -r _ LINES _ INVALID _ NREL _ ACC _ DUP _ REJ _ ODEPTH _ < node.out
DRAIN_S=$(echo "$T_END - $T0" | bc)
RATE=$(echo "scale=1; $BACKLOG / $DRAIN_S" | bc)
PEAK_KIB=$(awk -v t="$T0" '$1 >= t && $2 > m { m = $2 } END { print m + 0 }' rss.log)
BEFORE_KIB=$(awk -v t="$T0" '$1 < t { r = $2 } END { print r + 0 }' rss.log)
HWM_KIB=$(awk '{ h = $3 } END { print h + 0 }' rss.log)
NODE_TICKS=$(awk -v t="$T0" '$1 < t { a = $4 } { b = $4 } END { print b - a }' rss.log)
TCK=$(getconf CLK_TCK)

cat <<EOF

drain benchmark ($(nproc) cores, load average at end: $(cut -d' ' -f1-3 /proc/loadavg))
  events                 $LINES lines ($INVALID invalid on purpose), $DURATION of arena + conference from $START
  warm-up                $WARMUP_MIN min fed with the aggregator up: $WARM_UPLOADED releases uploaded
  backlog                $BACKLOG releases in the outbox (node released $NREL in all, $EXHAUSTED budget-exhausted)
  drain                  $DRAIN_S s from aggregator restart to node exit
                         (aggregator listening after $(echo "$T_LISTEN - $T0" | bc) s; first ack seen by ${T_FIRST:+$(echo "$T_FIRST - $T0" | bc) s})
  cpu during drain       node $(echo "scale=1; $NODE_TICKS / $TCK" | bc) s, aggregator $(echo "scale=1; $AGG_TICKS_DRAIN / $TCK" | bc) s
  node memory            VmRSS before drain $((BEFORE_KIB / 1024)) MiB, peak during drain $((PEAK_KIB / 1024)) MiB, VmHWM whole run $((HWM_KIB / 1024)) MiB
  node summary           releases $NREL accepted $ACC duplicate $DUP rejected $REJ outbox_depth $ODEPTH
  status after drain     outbox_depth $AFTER_DEPTH
  aggregator DB          $STORED releases stored ($DISTINCT distinct keys); node produced $PRODUCED; audit release entries: $AUDIT
EOF

ok=1
[ "$STORED" = "$PRODUCED" ] && [ "$DISTINCT" = "$STORED" ] && [ "$ACC" = "$PRODUCED" ] && [ "$DUP" = 0 ] && [ "$REJ" = 0 ] && [ "$ODEPTH" = 0 ] || ok=0
[ "$ok" = 1 ] && echo "  exactly once           OK" || { echo "  exactly once           MISMATCH"; }

echo
echo "backlog_releases $BACKLOG releases"
echo "drain_seconds $DRAIN_S s"
echo "drain_releases_per_s $RATE releases/s"
echo "drain_peak_rss_mib $(echo "scale=1; $PEAK_KIB / 1024" | bc) MiB"
echo "node_vmhwm_mib $(echo "scale=1; $HWM_KIB / 1024" | bc) MiB"
[ "$ok" = 1 ]
