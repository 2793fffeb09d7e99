#!/usr/bin/env bash
# Checkout throughput and cost, measured from outside the process as a user would: starts
# the real `payguard gateway-sim` (instant, approves everything, signed callbacks) and
# `payguard serve`, raises the stock through the admin API, warms up, then drives
# checkouts with wrk (bench/checkout.lua) and reads the service's CPU time and peak RSS
# from /proc. Every checkout is accepted, called back and settled during the run.
#
#   bench/checkout.sh [sqlite | postgres://...] [connections] [seconds]
#
# Then, against the same service with the same connections, a bare request (GET /healthz:
# routing, a JSON body, no database, no PG) for 5 s: what this machine does at all today,
# so that a checkout's figures can be read as multiples of it and compared across
# machines and days (the same build has run at half the speed on another day's VM).
# On PostgreSQL it also reports the server's CPU per checkout (all `postgres` processes:
# the server shares the cores with the service here), and analyzes the database after
# the warm-up: a live database has planner statistics from autovacuum, a new one has none
# until it runs, and its plans for a few thousand rows are not a live shop's.
#
# PAYGUARD_BIN picks the binary (default: the release build in the cargo target dir);
# PERF_DATA=FILE records a CPU profile of the service during the run (perf record -g);
# WRK_OUT=FILE keeps wrk's report (its whole latency distribution).
# RESTOCK="1 2 4" restocks only those products: the others sell out at once, and the
# checkouts for them are answered 409 OUT_OF_STOCK (a sold-out product under load).
# A PostgreSQL URL must name a database the benchmark may fill (it is migrated, not wiped).
# Give each run a fresh one (dropdb/createdb): a run leaves attempts unsettled when it
# stops, and the next run's reconciler settles them against a simulator that never saw
# them, beside the measured checkouts.
set -euo pipefail
cd "$(dirname "$0")/.."

database="${1:-sqlite}"
connections="${2:-64}"
seconds="${3:-10}"
sim_port=18082
port=18080
# shellcheck source=bench/common.sh
. bench/common.sh
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
postgres=""
[[ "$database" == postgres* ]] && postgres=1
if [ -n "$postgres" ] && ! command -v psql >/dev/null; then
  echo "psql is not installed (apt-get install postgresql-client)" >&2
  exit 1
fi
[ "$database" = sqlite ] && database="sqlite://$work/shop.db"

start_simulator
start_service "$database" "$work/service.log"

threads=$(( connections < 2 ? 1 : 2 ))
wrk -t"$threads" -c"$connections" -d3s -s bench/checkout.lua "$url" >/dev/null
[ -n "$postgres" ] && psql -q "$database" -c ANALYZE

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Context switches of all the service's threads (each trip to a SQLite connection's
# thread and back costs some).
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
hz=$(getconf CLK_TCK)
# CPU ticks of every process of the PostgreSQL server (0 when it is not local).
server_ticks() { for pid in $(pgrep -x postgres); do awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null; done | awk '{s += $1} END {print s + 0}'; }
if [ -n "${PERF_DATA:-}" ]; then
  perf record -q -F 999 -g -o "$PERF_DATA" -p "$service" -- sleep "$seconds" 2>/dev/null &
  perf=$!
fi
machine() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; }
read -r busy_before idle_before < <(machine)
before=$(ticks "$service")
switches_before=$(switches "$service")
sim_before=$(ticks "$sim")
server_before=$(server_ticks)
wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s bench/checkout.lua "$url" >"$work/wrk.txt"
after=$(ticks "$service")
switches_after=$(switches "$service")
read -r busy_after idle_after < <(machine)
sim_after=$(ticks "$sim")
server_after=$(server_ticks)
[ -n "${perf:-}" ] && wait "$perf"
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$service/status")

bare_seconds=5
bare_before=$(ticks "$service")
wrk -t"$threads" -c"$connections" -d"${bare_seconds}s" "$url/healthz" >"$work/bare.txt"
bare_after=$(ticks "$service")
bare_requests=$(awk '/requests in/ {print $1}' "$work/bare.txt")
bare_rate=$(awk '/Requests\/sec/ {print $2}' "$work/bare.txt")
bare_us=$(awk -v t=$((bare_after - bare_before)) -v hz="$hz" -v n="$bare_requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')

requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $5}' "$work/wrk.txt")
errors=$(awk '/Socket errors/ {print}' "$work/wrk.txt")
rate=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
cpu_us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" 'BEGIN {printf "%.0f", t / hz * 1e6 / n}')
sim_us=$(awk -v t=$((sim_after - sim_before)) -v hz="$hz" -v n="$requests" 'BEGIN {printf "%.0f", t / hz * 1e6 / n}')
cores=$(awk -v t=$((after - before)) -v hz="$hz" -v s="$seconds" 'BEGIN {printf "%.2f", t / hz / s}')

echo "database=${1:-sqlite} connections=$connections seconds=$seconds"
echo "checkouts/s=$rate checkouts=$requests non-2xx=${non2xx:-0} ${errors}"
echo "latency p50=$p50 p99=$p99"
echo "service cpu: ${cores} cores, ${cpu_us} us per checkout; peak rss $((rss_kb / 1024)) MB"
echo "service context switches: $(awk -v s=$((switches_after - switches_before)) -v n="$requests" 'BEGIN {printf "%.1f", s / n}') per checkout"
echo "simulator cpu: ${sim_us} us per checkout"
if [ -n "$postgres" ]; then
  echo "postgresql server cpu: $(awk -v t=$((server_after - server_before)) -v hz="$hz" -v n="$requests" 'BEGIN {printf "%.0f", t / hz * 1e6 / n}') us per checkout"
fi
echo "machine busy: $(awk -v b=$((busy_after - busy_before)) -v i=$((idle_after - idle_before)) 'BEGIN {printf "%.0f", 100 * b / (b + i)}')% of $(nproc) cores"
echo "bare request (GET /healthz, same connections): ${bare_rate}/s, ${bare_us} us service cpu each"
awk -v r="$rate" -v b="$bare_rate" -v c="$cpu_us" -v u="$bare_us" \
  'BEGIN {printf "checkout against a bare request: %.1f%% of its rate, %.0fx its cpu\n", 100 * r / b, c / u}'
if [ -n "${WRK_OUT:-}" ]; then cp "$work/wrk.txt" "$WRK_OUT"; fi
