#!/usr/bin/env bash
# Runs every test runner of the repository and ends with one line: "N passed, N failed".
# Set-up free on a machine with only the .NET SDK: restores the local tools (Paket) and packages,
# builds the solution in Release, then runs each Expecto project with `dotnet run`.
set -uo pipefail
cd "$(dirname "$0")"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

runners=(tests/BitBoxSync.Tests properties/BitBoxSync.Properties)
passed=0
failed=0

if ! dotnet tool restore >/dev/null || ! dotnet build BitBoxSync.Functional.sln -c Release --nologo -v quiet -clp:ErrorsOnly; then
    echo "build failed"
    echo "0 passed, ${#runners[@]} failed"
    exit 1
fi

for runner in "${runners[@]}"; do
    log=$(mktemp)
    echo "== $runner"
    dotnet run --no-build -c Release --project "$runner" -- --colours 0 --no-spinner "$@" 2>&1 | tee "$log" | grep -E "ERR|Falsifiable|EXPECTO!" || true
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

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
