#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Builds Cistern into ./build with warnings as errors and runs its unit and integration
# tests, then, under the address and undefined-behaviour sanitizers, the unit tests again and
# a replay of the fuzz corpora.
# Run it as root from the top of the source tree: the integration tests need loop devices,
# mounts and users other than the caller, and are skipped without root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash ./tools/install-deps.sh

if [ -f build/meson-private/coredata.dat ]; then
        meson setup --reconfigure build -Dwerror=true -Dtests=true
else
        meson setup build -Dwerror=true -Dtests=true
fi
meson compile -C build

status=0
rm -f build/meson-logs/testlog.json
meson test -C build --print-errorlogs --suite unit --suite integration || status=$?

# The unit tests once more, built with AddressSanitizer and UndefinedBehaviorSanitizer, and the
# parsers' fuzz corpora replayed under them (gcc builds no libFuzzer: one bounded pass per seed).
if [ ! -f build-sanitize/meson-private/coredata.dat ]; then
        meson setup build-sanitize -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false
fi
meson compile -C build-sanitize
meson test -C build-sanitize --print-errorlogs --suite unit --suite fuzz || status=$?

# One closing line with the totals, whatever meson's own summary looks like.
if [ -f build/meson-logs/testlog.json ] && command -v python3 >/dev/null; then
        python3 - build/meson-logs/testlog.json <<'PY' || true
import json, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
with open(sys.argv[1]) as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        result = json.loads(line).get("result")
        if result in ("OK", "EXPECTEDFAIL"):
            counts["passed"] += 1
        elif result == "SKIP":
            counts["skipped"] += 1
        else:
            counts["failed"] += 1
print("tests: {passed} passed, {failed} failed, {skipped} skipped".format(**counts))
PY
fi
exit "$status"
