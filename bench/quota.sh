#!/usr/bin/env bash
# quota.sh: two producers on one broker, one of them over its quota. The
# other should keep its throughput: it is measured alone, then beside the
# throttled one, REPS times each (medians), on 127.0.0.1 only.
#
#   bench/quota.sh                       # 3 x (5 s alone + 5 s together)
#   SECS=8 REPS=5 NOISY_QUOTA=20MiB bench/quota.sh
#
# The broker (release build, one core, authentication on) is started here on
# a temporary directory and stopped by its PID at the end; retention keeps
# each topic near 1 GiB (the quiet producer writes about 0.5 GB/s). Users `quiet`
# (no quota) and `noisy` (produce_bytes = NOISY_QUOTA) are made through the
# bootstrap admin. Prints a table and, last, one JSON line.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${SECS:-5}
REPS=${REPS:-3}
NOISY_QUOTA=${NOISY_QUOTA:-10MiB}
SIZE=${SIZE:-100}

cd "$ROOT"
cargo build --release -q -p ringmq -p ringmq-bench --bins
BIN=$ROOT/target/release

DIR=$(mktemp -d /tmp/ringmq-quota.XXXXXX)
PID=
cleanup() {
  local status=$?
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  if [ "$status" != 0 ]; then
    echo "failed; the bench said:" >&2
    tail -n 5 "$DIR/bench.log" >&2 2>/dev/null || true
  fi
  rm -rf "$DIR"
}
trap cleanup EXIT

umask 077
printf 'admin-password-of-the-quota-bench\n' >"$DIR/admin.pw"
printf 'quiet-password-of-the-quota-bench\n' >"$DIR/quiet.pw"
printf 'noisy-password-of-the-quota-bench\n' >"$DIR/noisy.pw"
cat >"$DIR/ringmq.toml" <<EOF
[quotas."User:noisy"]
produce_bytes = "$NOISY_QUOTA"
EOF

"$BIN/ringmq" serve --config "$DIR/ringmq.toml" --data-dir "$DIR/data" \
  --listen 127.0.0.1:0 --cores 1 --authentication true \
  --retention-bytes 1GiB --retention-check-interval 1s \
  --admin-user admin --admin-password-file "$DIR/admin.pw" 2>"$DIR/broker.log" &
PID=$!
ADDR=
for _ in $(seq 100); do
  ADDR=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$DIR/broker.log" | head -n1)
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "the broker did not start:" >&2; cat "$DIR/broker.log" >&2; exit 1; }

admin() { RINGMQ_USER=admin "$BIN/ringmq" "$@" --password-file "$DIR/admin.pw" --bootstrap "$ADDR"; }
admin user add quiet --new-password-file "$DIR/quiet.pw" >/dev/null
admin user add noisy --new-password-file "$DIR/noisy.pw" >/dev/null

# The broker's one core is the first; both load generators share the last,
# so the throttled one's wake-ups cannot preempt the broker (the kernel
# would otherwise put them anywhere, and the comparison measure that).
PIN=()
if command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ]; then
  PIN=(taskset -c "$(($(nproc) - 1))")
fi

# One producer as `user` on its own topic; prints its msgs/s.
produce() {
  local user=$1
  "${PIN[@]}" "$BIN/ringmq-bench" produce --bootstrap "$ADDR" --user "$user" \
    --password-file "$DIR/$user.pw" --topic "t-$user" --size "$SIZE" \
    --duration "${SECS}s" --json 2>>"$DIR/bench.log" |
    sed -n 's/.*"msgs_per_s":\([0-9.e+]*\).*/\1/p'
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

alone=(); together=(); noisy=()
for r in $(seq "$REPS"); do
  alone+=("$(produce quiet)")
  produce noisy >"$DIR/noisy.out" &
  n=$!
  together+=("$(produce quiet)")
  wait "$n"
  noisy+=("$(cat "$DIR/noisy.out")")
  echo "run $r: quiet alone ${alone[-1]} msgs/s; beside noisy ${together[-1]} msgs/s; noisy ${noisy[-1]} msgs/s" >&2
done

A=$(printf '%s\n' "${alone[@]}" | median)
T=$(printf '%s\n' "${together[@]}" | median)
N=$(printf '%s\n' "${noisy[@]}" | median)
QUOTA_MSGS=$(awk -v q="$NOISY_QUOTA" -v s="$SIZE" 'BEGIN {
  n = q + 0; u = q; sub(/^[0-9.]+/, "", u)
  m = (u == "KiB") ? 1024 : (u == "MiB") ? 1048576 : (u == "GiB") ? 1073741824 : 1
  printf "%.0f", n * m / s }')
awk -v a="$A" -v t="$T" -v n="$N" -v q="$QUOTA_MSGS" -v reps="$REPS" -v secs="$SECS" 'BEGIN {
  printf "| producer | msgs/s (median of %d x %d s) |\n|---|---:|\n", reps, secs
  printf "| quiet, alone | %.0f |\n", a
  printf "| quiet, beside noisy | %.0f (%.1f%% of alone) |\n", t, 100 * t / a
  printf "| noisy, over its quota (~%d msgs/s of payload) | %.0f |\n", q, n
  printf "{\"quiet_alone\":%.0f,\"quiet_beside_noisy\":%.0f,\"ratio\":%.3f,\"noisy\":%.0f}\n", a, t, t / a, n
}'
