#!/usr/bin/env bash
# Runs every test runner of the repository and ends with one line: "N passed, N failed".
# Set-up free on a machine with only the .NET SDK: restores the local tools (Paket) and packages,
# builds the solution in Release, then runs each Expecto project with `dotnet run`.
set -uo pipefail
cd "$(dirname "$0")"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

runners=(tests/BitBoxSync.Tests properties/BitBoxSync.Properties tests/BitBoxSync.Server.Tests tests/BitBoxSync.Engine.Tests tests/BitBoxSync.CSharp.Tests)

# PostgreSQL for the server tests: a throw-away cluster on 127.0.0.1, installed from apt when
# missing and running as root. Skipped outside CI when unavailable (CI=true makes that a failure).
start_postgres() {
    [ -n "${BITBOXSYNC_TEST_POSTGRES:-}" ] && return 0
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing PostgreSQL from apt"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql) >/dev/null 2>&1
        bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    fi
    if [ -z "$bin" ]; then
        echo "== PostgreSQL not available: its scenarios will not run"
        return 0
    fi
    PG_DIR=$(mktemp -d /tmp/bitboxsync-pg.XXXXXX)
    local port=$((20000 + RANDOM % 20000)) as=()
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PG_DIR"; as=(runuser -u postgres --); fi
    PG_CTL=("${as[@]}" "$bin/pg_ctl")
    "${as[@]}" "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null &&
        "${PG_CTL[@]}" -D "$PG_DIR/data" -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c fsync=off -c max_connections=300" \
            -l "$PG_DIR/server.log" -w start >/dev/null || { echo "== PostgreSQL failed to start"; cat "$PG_DIR/server.log" 2>/dev/null; return 0; }
    export BITBOXSYNC_TEST_POSTGRES="Host=127.0.0.1;Port=$port;Username=postgres;Database=postgres"
    trap stop_postgres EXIT
    echo "== PostgreSQL $(basename "$(dirname "$bin")") on 127.0.0.1:$port"
}

stop_postgres() {
    "${PG_CTL[@]}" -D "$PG_DIR/data" -m fast stop >/dev/null 2>&1
    rm -rf "$PG_DIR"
}

passed=0
failed=0

if ! dotnet tool restore >/dev/null || ! dotnet build BitBoxSync.Functional.sln -c Release --nologo -v quiet -clp:ErrorsOnly; then
    echo "build failed"
    echo "0 passed, ${#runners[@]} failed"
    exit 1
fi

start_postgres

for runner in "${runners[@]}"; do
    log=$(mktemp)
    echo "== $runner"
    dotnet run --no-build -c Release --project "$runner" -- --colours 0 --no-spinner "$@" 2>&1 | tee "$log" | grep -E "ERR|Falsifiable|EXPECTO!|^FAILED" || true
    rc=${PIPESTATUS[0]}
    line=$(grep -oE '[0-9]+ passed, [0-9]+ ignored, [0-9]+ failed, [0-9]+ errored' "$log" | tail -n 1)
    if [ -n "$line" ]; then
        read -r p _ _ _ f _ e _ <<<"${line//,/}"
        passed=$((passed + p))
        failed=$((failed + f + e))
        if [ "$rc" -ne 0 ] && [ $((f + e)) -eq 0 ]; then failed=$((failed + 1)); fi
    else
        echo "$runner did not report a result (exit code $rc)"
        tail -n 40 "$log"
        failed=$((failed + 1))
    fi
    rm -f "$log"
done

# The README's first command (the demo), as a user runs it: the demo binary built above.
echo "== README demo command (samples/BitBoxSync.Demo)"
demo_log=$(mktemp)
if timeout 300 dotnet run --no-build -c Release --project samples/BitBoxSync.Demo -- --watch-writes 3 >"$demo_log" 2>&1; then
    passed=$((passed + 1))
    tail -n 1 "$demo_log"
else
    failed=$((failed + 1))
    echo "the demo failed:"
    tail -n 40 "$demo_log"
fi
rm -f "$demo_log"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
