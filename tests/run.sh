#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with the Rust toolchain:
# installs the lab's packages, builds (or reuses) the lab image, boots the
# lab hosts, runs every test against them, and tears the lab down again,
# also when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

hosts=${DROVER_LAB_HOSTS:-6}
lab=tests/lab/lab.sh

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: the lab boots systemd-nspawn hosts and needs root" >&2
    exit 1
fi

"$lab" deps
# tests/lab/package.rs builds the .deb with cargo-deb. Pinned: newer
# releases announce refusing the dev profile that test packages from.
cargo deb --version >/dev/null 2>&1 || cargo install --locked cargo-deb@3.8.0
# The book (docs/): Debian has no mdbook package, so a pinned cargo
# binary, installed once and reused. Built before the lab boots, so a
# broken book fails early; tests/offline/book_refs.rs also builds it and checks links.
mdbook_version=0.5.4
if ! mdbook --version 2>/dev/null | grep -qx "mdbook v$mdbook_version"; then
    cargo install --locked "mdbook@$mdbook_version" --no-default-features --features search
fi
mdbook build docs
"$lab" image
trap '"$lab" down || true' EXIT
# .ci/run's timeout sends TERM: exit through the EXIT trap, so the lab
# hosts are taken down.
trap 'exit 143' TERM INT
DROVER_LAB_DIR=$("$lab" up "$hosts")
export DROVER_LAB_DIR
# Lab tests must run here: a missing lab is a failure, not a skip.
export DROVER_REQUIRE_LAB=1

cargo test --locked --no-fail-fast "$@"
