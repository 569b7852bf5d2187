#!/usr/bin/env bash
# The whole dmirror test suite: what README.md calls "the test command" and what CI runs.
# Each stage prints its own results; the script stops at the first failing stage.
set -euo pipefail
cd "$(dirname "$0")/.."

stage() { printf '\n==== %s\n' "$*"; }

stage "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

stage "unit, simulator, ABI and integration tests"
# Build first: the C ABI tests link target/release/libdmirror_ffi.a, which `cargo test` alone
# does not refresh. The simulator's core mutants (planted bugs it must catch) need a feature.
# Same features for both, so nothing is compiled twice (the mutants are inert unless a test
# plants one; the kernel build below is separate and has none).
cargo build --workspace --release --features dmirror-sim/core-mutants
cargo test --workspace --release --features dmirror-sim/core-mutants

if [ -x tests/ci-kernel.sh ]; then
  stage "kernel-target build and object audit"
  tests/ci-kernel.sh
fi

if [ -x tests/scenarios/selfcheck.sh ]; then
  stage "scenario scripts: syntax, shellcheck, self-checks"
  tests/scenarios/selfcheck.sh
fi

if [ -x tests/scenarios/run.sh ] && [ -f tests/scenarios/adapters/userland.sh ]; then
  stage "scenarios through the userland adapter"
  cargo build --release -p dmirror-cli
  DMIRROR="$PWD/target/release/dmirror" tests/scenarios/run.sh userland
fi

if [ -x geom/test/run.sh ]; then
  stage "GEOM class on the userland model of GEOM"
  geom/test/run.sh
fi

for d in geom dragonfly; do
  if [ -n "${SYSDIR:-}" ] && [ -x "$d/check-build.sh" ]; then
    stage "$d shim against SYSDIR=$SYSDIR"
    "$d/check-build.sh"
  fi
done
stage "all stages passed"
