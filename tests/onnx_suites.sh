#!/usr/bin/env bash
# tests/onnx_suites.sh [KERNC] - run the ONNX backend node tests through `kernc check`:
# Debian's libonnx-testdata (opset <= 17) and the node tests of the onnx 1.22 wheel (opset <= 23
# and newer), found through python3 (or $PYTHON). Prints FAIL lines and each suite's counts.
# Exits 1 when a test fails, a suite is missing, or the number of passes is not exactly the
# suite's floor: fewer is a regression that turned passes into skips, more means the floor must
# be raised in the same commit (so the floor always is today's count). Values are compared
# (JIT, rtol 1e-3, atol 1e-7); KERNC_CHECK_FLAGS adds flags (e.g. --shapes-only, --threads 1):
# the floors are the counts without flags, so with flags only fewer passes fail. A suite's
# tests/onnx/excluded-NAME.txt lists tests with known-wrong expected data, with the reason.
set -uo pipefail

kernc=${1:-build/kernc}
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
if [ ! -x "$kernc" ]; then
  echo "onnx_suites: no kernc program at '$kernc' (pass its path)" >&2
  exit 1
fi

debian=/usr/share/libonnx-testdata/data/node
pypi=$("$py" -c 'import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node"))' 2>/dev/null || true)

status=0
# name, folder, the exact number of passes expected
run() {
  local name=$1 dir=$2 floor=$3 out rc summary passed
  if [ -z "$dir" ] || [ ! -d "$dir" ]; then
    echo "$name: suite not found${dir:+ at $dir} (scripts/setup.sh installs it)"
    status=1
    return
  fi
  local exclude=()
  [ -f "$here/onnx/excluded-$name.txt" ] && exclude=(--exclude "$here/onnx/excluded-$name.txt")
  # shellcheck disable=SC2086
  out=$("$kernc" check --quiet ${KERNC_CHECK_FLAGS:-} "${exclude[@]}" --suite "$dir")
  rc=$?
  printf '%s\n' "$out" | grep '^FAIL ' | sed "s/^/$name: /"
  summary=$(printf '%s\n' "$out" | tail -n 1)
  echo "$name ($dir): $summary"
  passed=${summary%% passed*}
  if [ "$rc" -ne 0 ]; then
    status=1
  elif ! [ "$passed" -ge "$floor" ] 2>/dev/null; then
    echo "$name: only $passed passed, expected $floor"
    status=1
  elif [ "$passed" -gt "$floor" ] && [ -z "${KERNC_CHECK_FLAGS:-}" ]; then
    echo "$name: $passed passed, more than the floor $floor:" \
      "raise the floor to $passed in tests/onnx_suites.sh"
    status=1
  fi
}

# the two suites at once (each `kernc check` compiles one small model at a time, mostly on one
# core), their reports in a fixed order
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(
  run "libonnx-testdata" "$debian" 771 >"$tmp/1"
  echo $status >"$tmp/1.status"
) &
(
  run "onnx-1.22" "$pypi" 1280 >"$tmp/2"
  echo $status >"$tmp/2.status"
) &
wait
cat "$tmp/1" "$tmp/2"
for i in 1 2; do
  [ "$(cat "$tmp/$i.status" 2>/dev/null)" = 0 ] || status=1
done
exit $status
