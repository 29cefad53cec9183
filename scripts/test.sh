#!/usr/bin/env bash
# Runs every test: lint, unit and unprivileged tests, root netns tests, and the
# full-kernel VM lane (ipvlan & co., which the host kernel lacks). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "scripts/test.sh needs root (network namespaces)" >&2; exit 1; }
scripts/install-deps.sh

step() { printf '\n=== %s\n' "$*"; }

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "build"
cargo build --workspace --bins

step "unit, unprivileged and netns tests (host kernel)"
cargo test --workspace --no-fail-fast 2>&1 | tee target/host-tests.log

step "VM lane: tests named vm_* on a full Debian kernel"
mapfile -t bins < <(cargo test -p manifold-netns-tests --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])')
# The guest sees the host root read-only but not the host's /tmp: keep the script in target/.
vm_script=target/vm-tests.sh
{
  echo 'set -e'
  for b in "${bins[@]}"; do
    echo "\"$b\" --ignored --test-threads=1 vm_"
  done
} > "$vm_script"
netns-tests/vm/run-in-vm --timeout 1500 --with-netdevsim -- bash "$vm_script" 2>&1 | tee target/vm-tests.log

step "summary"
python3 - target/host-tests.log target/vm-tests.log <<'PY'
import re, sys
passed = failed = 0
for path in sys.argv[1:]:
    for line in open(path, errors="replace"):
        m = re.match(r"test result: \w+\. (\d+) passed; (\d+) failed", line)
        if m:
            passed += int(m.group(1)); failed += int(m.group(2))
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
