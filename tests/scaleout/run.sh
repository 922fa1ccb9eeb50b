#!/usr/bin/env bash
# The scale-out suite: several chat instances on one Redis (Debian's
# redis-server on a free port, its data in a temporary directory), clients
# moving between them (the `eventsource` npm package, Chromium, nginx),
# Redis restarted, emptied and stopped, and a hostile server on its port.
#
#   bash tests/scaleout/run.sh
#
# Installs what is missing (idempotent, the interop suite's installs):
# redis-server, chromium and nginx with apt-get, tests/interop/package.json
# with npm. Builds the examples (debug), runs every check script under a
# time limit and ends with the line `N passed, M failed`; exits non-zero if
# anything failed or could not run. Logs go to target/scaleout/logs/.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/tests/scaleout
OUT=$ROOT/target/scaleout
SCRIPT_LIMIT=${SCALEOUT_SCRIPT_LIMIT:-150} # seconds, per check script
mkdir -p "$OUT/logs"
rm -f "$OUT"/logs/* "$OUT"/*.png

export STDSSE_BIN_DIR=$ROOT/target/debug/examples
export INTEROP_OUT=$OUT
export PYTHONDONTWRITEBYTECODE=1

source "$ROOT/tests/interop/suite.sh"

echo "==> install: Debian packages"
install_debian redis-server chromium nginx

phase "install: npm packages (tests/interop/package.json)"
install_npm

phase "build the examples (debug)"
cargo build --examples --quiet || setup_problems+=("cargo build --examples failed")

phase "versions"
echo "redis-server: $(redis-server --version 2>/dev/null || echo 'not found')"
echo "chromium:     $(chromium --version 2>/dev/null || echo 'not found')"
echo "nginx:        $(nginx -v 2>&1 | sed 's/^nginx version: //')"
echo "node:         $(node --version 2>/dev/null || echo 'not found')"

report_setup_problems

run_checks fanout node "$HERE/fanout.mjs"
run_checks move node "$HERE/move.mjs"
run_checks redis-loss node "$HERE/redis_loss.mjs"
run_checks hostile python3 "$HERE/hostile.py"

phase "summary"
echo "logs: target/scaleout/logs/"
echo "scale-out suite: $(($(date +%s) - suite_start)) s in all"
echo "$passed passed, $failed failed"
((failed == 0))
