#!/usr/bin/env bash
# A core install, as a user without extras gets it: build the wheel, install it (no extras) into a
# NEW virtualenv, run every command on fixtures/mnist.tflite. Each must exit 0, or exit 2 with ONE
# line on stderr that names the extra to install (pip install 'tfl-rebuild[...]') and leave no
# output behind. Needs PyPI (the base dependencies); slow, so not part of `make test`:
#
#     make check-core-install        # or: bash scripts/check_core_install.sh [PYTHON]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${1:-python3}"
MODEL="$ROOT/fixtures/mnist.tflite"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tfl-core-install.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "building the wheel ..."
"$PYTHON" -m pip wheel -q --no-deps --wheel-dir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log"; exit 1; }
WHEEL="$(ls "$WORK"/dist/tfl_rebuild-*.whl)"
echo "installing $(basename "$WHEEL") without extras into a new virtualenv ..."
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1
"$WORK/venv/bin/python" -m pip install -q "$WHEEL" >"$WORK/install.log" 2>&1 \
    || { cat "$WORK/install.log"; exit 1; }
for heavy in tensorflow keras coremltools ai_edge_litert; do
    if "$WORK/venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$heavy') is None)"; then
        echo "FAIL: $heavy is installed in the core virtualenv"; exit 1
    fi
done
TFL="$WORK/venv/bin/tfl-rebuild"
OUT="$WORK/out"
mkdir -p "$OUT"
cd "$WORK"  # not the source tree: the installed package, not ./tfl_rebuild, must answer

failures=0
# name | output path the command must not leave behind on exit 2 (or -) | arguments
run() {
    local name="$1" out="$2"
    shift 2
    local rc=0
    "$TFL" "$@" >"$WORK/stdout" 2>"$WORK/stderr" || rc=$?
    local lines
    lines=$(wc -l <"$WORK/stderr")
    local verdict="ok"
    if [ "$rc" -eq 0 ]; then
        verdict="ok (exit 0)"
    elif [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] && grep -q "pip install 'tfl-rebuild\[[a-z,]*\]'" "$WORK/stderr"; then
        verdict="ok (exit 2: $(cat "$WORK/stderr"))"
        if [ "$out" != "-" ] && [ -e "$out" ]; then
            verdict="FAIL (exit 2 but wrote $out)"
        fi
    else
        verdict="FAIL (exit $rc, $lines stderr lines): $(head -c 600 "$WORK/stderr" | tr '\n' '|')"
    fi
    case "$verdict" in FAIL*) failures=$((failures + 1)) ;; esac
    printf '%-22s %s\n' "$name" "$verdict"
}

run "inspect" - inspect "$MODEL"
run "inspect --json" - inspect --json "$MODEL"
run "inspect --graph" - inspect --graph "$OUT/g.graphml" "$MODEL"
run "weights" - weights "$MODEL" -o "$OUT/w.npz"
run "dump" "$OUT/dump" dump "$MODEL" -o "$OUT/dump" --random 0
run "keras --no-verify" - keras "$MODEL" -o "$OUT/keras_noverify" --no-verify
run "keras" "$OUT/keras" keras "$MODEL" -o "$OUT/keras"
run "compare" - compare "$MODEL" "$OUT/keras_noverify/mnist.py"
run "coreml" "$OUT/mnist.mlpackage" coreml "$MODEL" -o "$OUT/mnist.mlpackage"
run "check" "$OUT/check" check "$MODEL" --keep "$OUT/check"
run "--version" - --version

if [ "$failures" -ne 0 ]; then
    echo "$failures command(s) failed on a core install"
    exit 1
fi
echo "core install: every command exits 0 or names its extra in one line"
