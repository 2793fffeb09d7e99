#!/usr/bin/env bash
# What one checkout costs the service in heap allocations (dhat) or in instructions it
# executes (callgrind), counted by valgrind: runs `payguard serve` under the tool twice
# beside the real `payguard gateway-sim` (instant, approves everything, signed
# callbacks), once with FEW and once with MANY checkouts, each accepted, called back and
# settled, and divides the difference of the two totals by MANY - FEW, so that what
# startup and shutdown cost cancels out. Counts repeat from run to run whatever else the
# machine is doing; valgrind runs the service some 20-50 times slower, so this counts and
# does not time. Each checkout is a new HTTP connection from curl (wrk keeps them open).
#
#   bench/valgrind.sh dhat|callgrind [FEW] [MANY]       (defaults 200 and 1200)
#
# OUT=DIR keeps the tool's file of the MANY run (callgrind_annotate DIR/callgrind.out).
# PAYGUARD_BIN picks the binary (default: the release build in the cargo target dir).
set -euo pipefail
cd "$(dirname "$0")/.."

tool="${1:-}"
few="${2:-200}"
many="${3:-1200}"
case "$tool" in
  dhat | callgrind) ;;
  *) echo "usage: bench/valgrind.sh dhat|callgrind [FEW] [MANY]" >&2; exit 2 ;;
esac
sim_port=18092
port=18090
# shellcheck source=bench/common.sh
. bench/common.sh
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }

start_simulator

# One run: a fresh database, COUNT checkouts from 16 at a time, every one settled, then a
# graceful stop. Prints what the tool counted over the service's whole life: blocks
# allocated (dhat) or instructions executed (callgrind).
run() {
  local count=$1 db="$work/shop-$1.db" pending=""
  rm -f "$db"
  start_service "sqlite://$db" "$work/service-$count.log" \
    valgrind --tool="$tool" "--$tool-out-file=$work/$tool-$count.out"
  accepted=$(seq 1 "$count" | xargs -P 16 -I{} curl -s -o /dev/null -w '%{http_code}\n' \
    -X POST -H 'Content-Type: application/json' -H 'X-USER-ID: buyer-{}' \
    -d '{"items":[{"productId":1,"quantity":1}],"cardType":"SAMSUNG","cardNo":"1234-5678-9814-1451"}' \
    "$url/api/v1/orders" | grep -c '^202$' || true)
  [ "$accepted" = "$count" ] || { echo "only $accepted of $count checkouts were accepted" >&2; exit 1; }
  # Settled: the backlog the metrics scrape counts is empty.
  for _ in $(seq 1 600); do
    pending=$(curl -sf "$url/metrics" | awk '$1 == "payguard_payments_pending" {print $2}')
    [ "$pending" = 0 ] && break
    sleep 0.1
  done
  [ "$pending" = 0 ] || { echo "$pending payments of $count still pending" >&2; exit 1; }
  kill -TERM "$service"
  wait "$service" || true
  if [ "$tool" = dhat ]; then
    awk '/Total:/ {gsub(",", "", $0); for (i = 1; i <= NF; i++) if ($i == "in") print $(i + 1)}' \
      "$work/service-$count.log" | head -n 1
  else
    awk '/^totals:/ {print $2}' "$work/callgrind-$count.out"
  fi
  if [ -n "${OUT:-}" ] && [ "$count" = "$many" ]; then
    mkdir -p "$OUT" && cp "$work/$tool-$count.out" "$OUT/$tool.out"
  fi
}

few_total=$(run "$few")
many_total=$(run "$many")
what=$([ "$tool" = dhat ] && echo allocations || echo instructions)
echo "checkouts: $few -> $few_total $what in the service's life; $many -> $many_total"
echo "$what per checkout: $(( (many_total - few_total) / (many - few) ))"
