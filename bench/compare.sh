#!/usr/bin/env bash
# compare.sh: the same workloads against ringmq and the peer brokers, in one
# run, on 127.0.0.1 only, as a table with ratios (ringmq / peer), plus the
# machine's own limits.
#
#   bench/compare.sh            # full: about 9-11 minutes
#   QUICK=1 bench/compare.sh    # shorter runs, 1 repetition of ringmq, 20 s RSS run
#
# Peers and machine limits come from ../shared/peers (install-peers.sh must
# have run; set PEERS_DIR if it lives elsewhere): the functions of
# bench-peers.sh (bench_machine, bench_redis, bench_nats, bench_iggy, its
# process care and result records) are sourced and called here; RabbitMQ is
# left out for time. ringmq runs embedded (a fresh `ringmq serve`, release
# build, per run), each workload REPS times (default 3), and the median is
# reported. Every server is stopped by its PID; nothing else is killed.
# Results: $OUT/results.jsonl (peers and ringmq rows), $OUT/machine.jsonl,
# $OUT/summary.md, $OUT/compare.md (the table below), raw output in $OUT/raw.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# TABLE_ONLY=DIR re-renders the table of an earlier run's results in DIR.
TABLE_ONLY=${TABLE_ONLY:-}
PEERS_DIR=${PEERS_DIR:-}
if [ -z "$PEERS_DIR" ]; then
  for d in "$ROOT/../shared/peers" /work/shared/peers; do
    [ -f "$d/bench-peers.sh" ] && { PEERS_DIR=$(cd "$d" && pwd); break; }
  done
fi
[ -f "${PEERS_DIR:-}/bench-peers.sh" ] || { echo "bench-peers.sh not found; set PEERS_DIR" >&2; exit 2; }

QUICK=${QUICK:-0}
REPS=${REPS:-3}; [ "$QUICK" = 1 ] && REPS=${REPS_QUICK:-1}
RDUR=${RING_DUR:-3}; [ "$QUICK" = 1 ] && RDUR=2
RSS_SECS=${RSS_SECS:-60}; [ "$QUICK" = 1 ] && RSS_SECS=20
OUT=${OUT:-/tmp/ringmq-compare/$(date +%Y%m%dT%H%M%S)}
DATA=${DATA:-/tmp/ringmq-compare/data}
export OUT DATA QUICK
T0=$(date +%s)

if [ -n "$TABLE_ONLY" ]; then OUT=$TABLE_ONLY; else
echo "== build (release)"
(cd "$ROOT" && cargo build --release -q -p ringmq -p ringmq-bench) || { echo "build failed" >&2; exit 1; }
BENCH=$ROOT/target/release/ringmq-bench
export RINGMQ_BIN=$ROOT/target/release/ringmq

# bench-peers.sh without its main section: its functions, variables and
# EXIT trap (which stops every PID in STARTED_PIDS).
# shellcheck disable=SC1090
source <(sed '/^# -* main$/,$d' "$PEERS_DIR/bench-peers.sh")
HERE=$PEERS_DIR   # bench-peers.sh finds lib/ through HERE

echo "results -> $OUT"
echo "cpu pressure at start: $(head -1 /proc/pressure/cpu)" | tee "$OUT/pressure.txt"

# ------------------------------------------------------------------ ringmq
RING=$OUT/ringmq.jsonl
# ring NAME REPS ringmq-bench-args...: REPS runs, each on a fresh embedded broker;
# one JSON line per run in $RING, tagged with NAME.
ring() {
  local name=$1 reps=$2 i raw line; shift 2
  for ((i = 1; i <= reps; i++)); do
    N_RUN=$((N_RUN + 1))
    raw=$OUT/raw/$(printf %03d $N_RUN)-ringmq-$name-$i.txt
    echo "\$ $BENCH $* --embedded --json" > "$raw"
    echo "cpu pressure: $(head -1 /proc/pressure/cpu)" >> "$raw"
    timeout $((RUN_TIMEOUT + RSS_SECS)) "$BENCH" "$@" --embedded --json > "$raw.json" 2>> "$raw"
    echo "exit=$?" >> "$raw"
    line=$(grep '^{' "$raw.json" | tail -1)
    if [ -n "$line" ]; then
      python3 -c 'import json,sys; d=json.loads(sys.argv[2]); d["name"]=sys.argv[1]; d["run"]=int(sys.argv[3]); print(json.dumps(d))' \
        "$name" "$line" "$i" >> "$RING"
      python3 -c 'import json,sys; d=json.loads(sys.argv[1]); m,b,p5,p9,p99=(d[k] for k in ("msgs_per_s","mb_per_s","p50_us","p99_us","p999_us")); print(f"ringmq     {sys.argv[2]:30s} run {sys.argv[3]}: {m:>11,.0f} msg/s {b:8.1f} MB/s  p50 {p5:.0f}us p99 {p9:.0f}us p99.9 {p99:.0f}us")' \
        "$line" "$name" "$i"
    else
      echo "ringmq     $name run $i: FAILED (see $raw)"
    fi
  done
}
median_of() {  # median_of NAME FIELD
  python3 - "$RING" "$1" "$2" <<'EOF'
import json, sys, statistics
f, name, field = sys.argv[1:]
v = [json.loads(l)[field] for l in open(f) if json.loads(l).get("name") == name] if __import__("os").path.exists(f) else []
print(statistics.median(v) if v else 0)
EOF
}

echo "== ringmq (embedded, release build; $REPS runs each, medians)"
ring produce-100 "$REPS" produce --size 100 --duration ${RDUR}s
ring produce-1k "$REPS" produce --size 1024 --duration ${RDUR}s
ring every-batch-8p "$REPS" produce --size 100 --producers 8 --flush every-batch --duration ${RDUR}s
# e2e's own maximum: producers flat out, consumers reading at once (the rate
# counts messages consumed, so a consumer that falls behind lowers it).
ring e2e-max "$REPS" e2e --size 100 --linger 100us --duration $((RDUR + 2))s
half_of() { python3 -c "print(max(1000, int(float('$1') / 2)))"; }
HALF=$(half_of "$(median_of e2e-max msgs_per_s)")
echo "ringmq e2e at half of its e2e maximum: $HALF msgs/s"
ring e2e-half "$REPS" e2e --size 100 --linger 100us --rate "$HALF" --duration $((RDUR + 2))s
# The same at half of the produce-only maximum, a rate the e2e workload
# (producers and consumers on one 2-core machine) cannot take calmly.
HALF_PRODUCE=$(half_of "$(median_of produce-100 msgs_per_s)")
echo "ringmq e2e at half of its produce maximum: $HALF_PRODUCE msgs/s"
ring e2e-half-produce "$REPS" e2e --size 100 --linger 100us --rate "$HALF_PRODUCE" --duration $((RDUR + 2))s
# Retention keeps the 60 s run (~20 GB at 3M msgs/s) off a full disk.
ring rss-sustained 1 produce --size 100 --rate "$HALF_PRODUCE" --duration ${RSS_SECS}s --retention-bytes 2GiB

# ------------------------------------------------------------------- peers
bench_machine
bench_redis
bench_nats
bench_iggy

# NATS JetStream at ringmq's e2e rate (open loop; its latency is publish to PubAck)
bench_nats_at_rate() {
  [ -x "$NATS_SERVER" ] || return 0
  local port=4223 dir=$DATA/nats-rate np ver url=nats://127.0.0.1:4223
  ver=$("$NATS_SERVER" --version | sed 's/nats-server: v//')
  rm -rf "$dir"; mkdir -p "$dir"
  printf 'listen: 127.0.0.1:%s\njetstream {\n  store_dir: "%s/js"\n}\n' $port "$dir" > "$dir/nats.conf"
  "$NATS_SERVER" -c "$dir/nats.conf" > "$dir/nats.log" 2>&1 & np=$!
  STARTED_PIDS+=("$np"); wait_port $port 10 || { stop_pid $np; return; }
  local RUN_TIMEOUT=$((RDUR + 17))   # a peer that cannot sustain the rate never finishes: bounded
  run_rec peerbench nats "$ver" "JetStream file store, R1, default sync; open loop at ringmq's e2e rate" produce 100 $np \
    "$PB js-pub --url $url --storage file --size 100 --count $((HALF * (RDUR + 2))) --duration $((RDUR + 2)) --rate $HALF --window 65536"
  stop_pid $np
  rm -rf "$dir"
}
bench_nats_at_rate

python3 "$HERE/lib/summarize.py" "$OUT" > "$OUT/summary.md"
fi

# ------------------------------------------------------------------- table
python3 - "$OUT" <<'EOF' | tee "$OUT/compare.md"
import json, os, statistics, sys
out = sys.argv[1]
def rows(name):
    p = os.path.join(out, name)
    return [json.loads(l) for l in open(p)] if os.path.exists(p) else []
ring, peers, machine = rows("ringmq.jsonl"), rows("results.jsonl"), rows("machine.jsonl")

def rmed(name, field):
    v = [r[field] for r in ring if r["name"] == name and r.get(field) is not None]
    return (statistics.median(v), len(v), v) if v else (None, 0, [])

def peer(peer, op, size, contains):
    for r in peers:
        if r["peer"] == peer and r["op"] == op and r["size"] == size and contains in r["settings"] and r.get("ok"):
            return r
    return None

def f(v, nd=0):
    return "—" if v is None else f"{v:,.{nd}f}"

print("### Machine limits (same run)\n")
print("| what | result |\n|---|---|")
for m in machine:
    print(f"| {m['what']} | {m['result']} |")
print()
print("### ringmq vs peers, same run (ringmq: median of its runs; ratio = ringmq / peer)\n")
print("| workload | ringmq | runs | peer | peer settings | peer | ratio |")
print("|---|---|---|---|---|---|---|")
def line(work, name, field, unit, comps, higher_better=True):
    m, n, v = rmed(name, field)
    runs = ", ".join(f"{x:,.0f}" for x in v)
    if not comps:
        print(f"| {work} | {f(m)} {unit} | {runs} | — | — | — | — |")
    for pname, pr, pfield in comps:
        pv = pr.get(pfield) if pr else None
        ratio = (m / pv) if (m is not None and pv) else None
        rs = f"{ratio:.2f}×" if ratio is not None else "—"
        if ratio is not None and not higher_better:
            rs += " (lower is better)"
        print(f"| {work} | {f(m)} {unit} | {runs} | {pname} | {pr['settings'] if pr else 'not measured'} | {f(pv)} {unit} | {rs} |")

for size, name in ((100, "produce-100"), (1024, "produce-1k")):
    comps = [
        ("Redis Streams", peer("redis", "produce", size, "AOF off"), "msgs_per_s"),
        ("Redis Streams", peer("redis", "produce", size, "everysec; 50"), "msgs_per_s"),
        ("NATS JetStream", peer("nats", "produce", size, "default sync (fsync every 2 min); PubAck"), "msgs_per_s"),
        ("Iggy", peer("iggy", "produce", size, "enforce_fsync=false"), "msgs_per_s"),
    ]
    comps = [c for c in comps if c[1] is not None] or [("(no peer)", None, "msgs_per_s")]
    line(f"produce {size} B, acks=1, flush 100ms, msgs/s", name, "msgs_per_s", "", comps)
m, _, _ = rmed("produce-1k", "mb_per_s")
print(f"| produce 1 KiB, MB/s | {f(m, 1)} MB/s | | target | ≥ 1000 MB/s | | |")
comps = [
    ("Redis Streams", peer("redis", "produce", 100, "always (fsync before reply); 50"), "msgs_per_s"),
    ("NATS JetStream", peer("nats", "produce", 100, "sync_interval: always (fsync per write); PubAck"), "msgs_per_s"),
    ("Iggy", peer("iggy", "produce", 100, "enforce_fsync=true"), "msgs_per_s"),
]
comps = [c for c in comps if c[1] is not None] or [("(no peer)", None, "msgs_per_s")]
line("produce 100 B, flush every-batch, 8 producers, msgs/s", "every-batch-8p", "msgs_per_s", "", comps)
m, _, v = rmed("e2e-half", "p99_us")
runs = ", ".join(f"{x:,.0f}" for x in v)
rate = rmed("e2e-half", "msgs_per_s")[0]
at = [r for r in peers if r["peer"] == "nats" and "open loop at ringmq's e2e rate" in r["settings"]]
if at:
    r = at[0]
    pv = r.get("p99_us") if r.get("ok") else None
    txt = f"{pv:,.0f} µs" if pv else "could not sustain the rate (run did not finish; no latency)"
    rs = f"{m / pv:.2f}× (lower is better)" if pv and m else "—"
    print(f"| e2e p99 at half ringmq's e2e max rate ({rate:,.0f} msgs/s) | {f(m)} µs | {runs} | NATS JetStream (publish→PubAck) | {r['settings']} | {txt} | {rs} |")
lo = peer("nats", "produce", 100, "default sync (fsync every 2 min); open loop 5000")
if lo:
    print(f"| (reference, not the same rate) | | | NATS JetStream (publish→PubAck) | {lo['settings']} | {f(lo.get('p99_us'))} µs | — |")
print("| e2e p99, Redis Streams | | | Redis | redis-benchmark has no fixed-rate mode: not measured | — | — |")
for fld, lab in (("p50_us", "p50"), ("p999_us", "p99.9"), ("msgs_per_s", "achieved msgs/s")):
    line(f"e2e {lab} at half e2e max rate", "e2e-half", fld, "", [])
line("e2e max (flat out), msgs/s consumed", "e2e-max", "msgs_per_s", "", [])
for fld, lab in (("p99_us", "p99"), ("p999_us", "p99.9"), ("msgs_per_s", "achieved msgs/s")):
    line(f"e2e {lab} at half produce max rate", "e2e-half-produce", fld, "", [])
rs = [r for r in ring if r["name"] == "rss-sustained"]
if rs:
    s = rs[0].get("broker_anon_series_mib") or []
    warm = s[min(5, len(s) - 1):] if s else []
    print(f"| broker RSS over {rs[0]['secs']:.0f} s sustained produce at {rs[0]['msgs_per_s']:,.0f} msgs/s | VmRSS start {f(rs[0].get('broker_rss_start_mib'))} / max {f(rs[0].get('broker_rss_max_mib'))} / end {f(rs[0].get('broker_rss_end_mib'))} MiB (mapped segment pages included); anonymous after 5 s warm-up: min {f(min(warm) if warm else None, 1)} / max {f(max(warm) if warm else None, 1)} MiB | 1 | | | | |")
print()
print(f"cpu pressure: {open(os.path.join(out, 'pressure.txt')).read().strip()}; at end: {open('/proc/pressure/cpu').readline().strip()}")
EOF
echo "compare.sh took $(( $(date +%s) - T0 )) s; results in $OUT"
