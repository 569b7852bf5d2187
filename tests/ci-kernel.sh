#!/bin/sh
# ci-kernel.sh - the kernel-target CI step: build for x86_64-unknown-none and audit the objects.
# Called from .ci/run. Installs nothing; the machine needs (Debian 12):
#   apt-get install -y rustc-web cargo-web rust-web-src libclang-dev lld-19 clang-19 binutils
# (llvm-19 is optional: its llvm-nm/llvm-readelf are used when present, binutils otherwise).
# Network: crates.io (cargo fetches the crates and -Zbuild-std's own dependencies).
#
# SPDX-License-Identifier: BSD-2-Clause
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
sh "$ROOT/tests/kernel-build.sh"
