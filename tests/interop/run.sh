#!/usr/bin/env bash
# The interop suite: real clients (Chromium via playwright-core, the
# `eventsource` npm package, httpx-sse, sseclient-py, curl, nginx, and the
# crate's own `tail`) against the clock, chat and notify examples.
#
#   bash tests/interop/run.sh
#
# Installs what is missing (idempotent): Debian's chromium, nginx and curl
# with apt-get; package.json into tests/interop/node_modules with npm;
# requirements.txt into target/interop/venv with pip. Builds the examples
# (debug), runs every check script, and ends with the line
# `N passed, M failed`; exits non-zero if anything failed or could not run.
# Artifacts (screenshots, logs, versions.txt) go to target/interop/.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/tests/interop
OUT=$ROOT/target/interop
VENV=$OUT/venv
SCRIPT_LIMIT=${INTEROP_SCRIPT_LIMIT:-300} # seconds, per check script
mkdir -p "$OUT/logs"
rm -f "$OUT"/logs/* "$OUT"/*.png

export STDSSE_BIN_DIR=$ROOT/target/debug/examples
export INTEROP_OUT=$OUT
export INTEROP_PYTHON=$VENV/bin/python
export PYTHONDONTWRITEBYTECODE=1

source "$HERE/suite.sh"

echo "==> install: Debian packages"
install_debian chromium nginx curl

phase "install: npm packages (tests/interop/package.json)"
install_npm

phase "install: Python packages (tests/interop/requirements.txt into target/interop/venv)"
if [[ -x $VENV/bin/python ]] && cmp -s "$HERE/requirements.txt" "$VENV/requirements.installed"; then
    echo "present"
elif ! { [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"; } >"$OUT/logs/pip.log" 2>&1 ||
    ! "$VENV/bin/pip" install --disable-pip-version-check -q -r "$HERE/requirements.txt" >>"$OUT/logs/pip.log" 2>&1; then
    tail -n 20 "$OUT/logs/pip.log"
    setup_problems+=("pip install failed (see target/interop/logs/pip.log)")
else
    cp "$HERE/requirements.txt" "$VENV/requirements.installed"
    echo "installed"
fi

phase "build the examples (debug)"
if ! cargo build --examples --quiet; then
    setup_problems+=("cargo build --examples failed")
fi

phase "versions (also in target/interop/versions.txt)"
{
    pkg() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"; }
    npm_version() { node -p "require('$HERE/node_modules/$1/package.json').version" 2>/dev/null || echo "not installed"; }
    echo "chromium:        $(chromium --version 2>/dev/null || echo 'not found') (Debian package $(pkg chromium))"
    echo "playwright-core: $(npm_version playwright-core)"
    echo "eventsource:     $(npm_version eventsource) (npm)"
    echo "node:            $(node --version 2>/dev/null || echo 'not found')"
    "$VENV/bin/python" - <<'EOF' 2>/dev/null || echo "python packages: not installed"
import importlib.metadata as m, platform
for name in ("httpx-sse", "sseclient-py", "httpx", "requests"):
    print(f"{name + ':':16} {m.version(name)} (PyPI)")
print(f"python:          {platform.python_version()}")
EOF
    echo "nginx:           $(nginx -v 2>&1 | sed 's/^nginx version: //') (Debian package $(pkg nginx))"
    echo "curl:            $(curl --version 2>/dev/null | head -n 1 | cut -d' ' -f1-2) (Debian package $(pkg curl))"
    echo "rustc:           $(rustc --version)"
} | tee "$OUT/versions.txt"

report_setup_problems

run_checks curl bash "$HERE/curl.sh"
run_checks tail bash "$HERE/tail.sh"
run_checks node-eventsource node "$HERE/node_eventsource.mjs"
run_checks python-clients "$INTEROP_PYTHON" "$HERE/python_clients.py"
run_checks nginx bash "$HERE/nginx.sh"
run_checks browser node "$HERE/browser.mjs"
run_checks notify node "$HERE/notify.mjs"

phase "summary"
echo "artifacts: $(cd "$ROOT" && ls target/interop/*.png 2>/dev/null | tr '\n' ' ')target/interop/logs/"
echo "interop suite: $(($(date +%s) - suite_start)) s in all"
echo "$passed passed, $failed failed"
((failed == 0))
