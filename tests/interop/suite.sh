# Shared by tests/interop/run.sh and tests/scaleout/run.sh (sourced): installs
# what is missing (idempotent), runs check scripts under a time limit and
# counts their PASS/FAIL lines. Needs ROOT, OUT (logs in $OUT/logs) and
# SCRIPT_LIMIT; fills setup_problems, passed and failed.
INTEROP_DIR=$ROOT/tests/interop
setup_problems=()
passed=0
failed=0
suite_start=$(date +%s)
phase_start=$suite_start
phase() {
    local now
    now=$(date +%s)
    printf '    (%ss)\n\n==> %s\n' "$((now - phase_start))" "$*"
    phase_start=$now
}

# install_debian COMMAND...: apt-get installs the Debian package of each
# command not on PATH (each package is named as its command).
install_debian() {
    local need=() name
    for name in "$@"; do
        command -v "$name" >/dev/null || need+=("$name")
    done
    if ((${#need[@]})); then
        echo "installing ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -q && apt-get install -y -q "${need[@]}"; } >"$OUT/logs/apt.log" 2>&1; then
            tail -n 20 "$OUT/logs/apt.log"
            setup_problems+=("apt-get install ${need[*]} failed (see $OUT/logs/apt.log)")
        fi
        grep -E '^(Need to get|Fetched)' "$OUT/logs/apt.log"
    else
        printf '%s' "$1"
        shift
        printf ', %s' "$@"
        echo ": present"
    fi
}

# install_npm: tests/interop/package.json into tests/interop/node_modules,
# unless the pinned versions are there already.
npm_current() {
    node -e '
        const dir = process.argv[1];
        const want = require(dir + "/package.json").dependencies;
        for (const [name, version] of Object.entries(want)) {
            const have = require(`${dir}/node_modules/${name}/package.json`).version;
            if (have !== version) process.exit(1);
        }' "$INTEROP_DIR" 2>/dev/null
}
install_npm() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        setup_problems+=("node and npm are not installed")
    elif npm_current; then
        echo "present"
    elif ! (cd "$INTEROP_DIR" && npm install --no-audit --no-fund --loglevel=error) >"$OUT/logs/npm.log" 2>&1 || ! npm_current; then
        tail -n 20 "$OUT/logs/npm.log"
        setup_problems+=("npm install failed (see $OUT/logs/npm.log)")
    else
        echo "installed"
    fi
}

# report_setup_problems: each problem is one failure.
report_setup_problems() {
    local problem
    for problem in "${setup_problems[@]}"; do
        echo "FAIL setup: $problem"
        failed=$((failed + 1))
    done
}

# run_checks LABEL COMMAND...: runs one check script (bounded), shows its
# output and counts its PASS/FAIL lines; a script that dies without saying
# why counts as one failure.
run_checks() {
    local label=$1 log=$OUT/logs/$1.out status p f
    shift
    phase "$label"
    timeout -k 10 "$SCRIPT_LIMIT" "$@" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    if [[ $status != 0 && $f == 0 ]]; then
        [[ $status == 124 ]] && echo "FAIL $label: timed out after ${SCRIPT_LIMIT}s" ||
            echo "FAIL $label: exited with status $status without reporting a failure"
        f=1
    elif [[ $status == 0 && $p == 0 ]]; then
        echo "FAIL $label: ran no check"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
}
