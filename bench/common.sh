# What the benchmark scripts share, sourced by them: the binary, a work directory removed
# on exit, the bundled simulator (instant, approves everything, signed callbacks), and
# `payguard serve` beside it, ready and restocked. Set `sim_port` and `port` first.

bin="${PAYGUARD_BIN:-${CARGO_TARGET_DIR:-target}/release/payguard}"
[ -x "$bin" ] || { echo "no binary at $bin: cargo build --release -p payguard" >&2; exit 1; }
work="$(mktemp -d)"
secret="bench-callback-secret-0123456789abcdef"
token="bench-admin-token-0123456789abcdef"
url="http://127.0.0.1:$port"

cleanup() {
  kill "${service:-}" "${sim:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start_simulator() {
  "$bin" gateway-sim --listen "127.0.0.1:$sim_port" --instant --failure-rate 0 \
    --callback-secret "$secret" >"$work/sim.log" 2>&1 &
  sim=$!
}

# start_service DATABASE_URL LOG [WRAPPER...]: `payguard serve` on DATABASE_URL (run under
# WRAPPER, e.g. valgrind, when given), waited for until ready (up to 60 s), products 1, 2, 4
# and 5 (or those RESTOCK lists) raised by 1,000,000. Sets `service` to its pid.
start_service() {
  local database=$1 log=$2
  shift 2
  PAYGUARD_ADMIN__TOKEN="$token" PAYGUARD_GATEWAY__CALLBACK_SECRET="$secret" \
    "$@" "$bin" serve --listen "127.0.0.1:$port" --gateway-url "http://127.0.0.1:$sim_port" \
    --public-url "$url" --database-url "$database" >"$log" 2>&1 &
  service=$!
  for _ in $(seq 1 600); do
    curl -sf "$url/readyz" >/dev/null && break
    sleep 0.1
  done
  curl -sf "$url/readyz" >/dev/null || { cat "$log" >&2; exit 1; }
  for product in ${RESTOCK:-1 2 4 5}; do
    curl -sf -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
      -d '{"add":1000000}' "$url/api/v1/admin/products/$product/stock" >/dev/null
  done
}
