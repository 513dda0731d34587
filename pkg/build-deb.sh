#!/usr/bin/env bash
# Build drover's Debian package with cargo-deb:
#   pkg/build-deb.sh [--profile PROFILE] [--no-build] [CARGO-DEB ARGS...]
# builds the binary (release unless --profile says otherwise; --no-build
# uses the one already built), has that binary write the man pages and
# shell completions into target/pkg-assets (they are generated from its
# command-line definition, so they always match it), then runs
# `cargo deb --no-build`; the rest of the arguments go to cargo deb (e.g.
# `--output DIR`, `--fast`). Prints the path of the .deb on the last line.
# Needs cargo-deb: cargo install cargo-deb --locked
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
deb_args=()
while (($#)); do
	case $1 in
	--profile)
		[[ $# -ge 2 ]] || { echo "build-deb.sh: --profile needs a value" >&2; exit 1; }
		profile=$2
		shift 2
		;;
	--profile=*) profile=${1#*=}; shift ;;
	--no-build) build=0; shift ;;
	*) deb_args+=("$1"); shift ;;
	esac
done

if ! cargo deb --version >/dev/null 2>&1; then
	echo "build-deb.sh: cargo-deb is missing; install it with: cargo install cargo-deb --locked" >&2
	exit 1
fi

if ((build)); then
	cargo build --locked --profile "$profile" --bin drover
fi

target_dir=$(cargo metadata --no-deps --format-version 1 |
	sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
# Cargo's one renamed profile directory.
case $profile in
dev | test) profile_dir=debug ;;
bench) profile_dir=release ;;
*) profile_dir=$profile ;;
esac
bin=$target_dir/$profile_dir/drover
[[ -x $bin ]] || { echo "build-deb.sh: $bin is not built (drop --no-build?)" >&2; exit 1; }

# Fixed path: the asset list in Cargo.toml names it.
assets=target/pkg-assets
rm -rf "$assets"
mkdir -p "$assets/completions"
"$bin" man "$assets/man" >/dev/null
"$bin" completions bash >"$assets/completions/drover"
"$bin" completions zsh >"$assets/completions/_drover"
"$bin" completions fish >"$assets/completions/drover.fish"

# --strip: the release profile keeps line tables for backtraces
# (debug = 1), which cargo-deb would otherwise ship; a debug build's
# symbols are ten times the program.
out=$(cargo deb --no-build --locked --strip --profile "$profile" "${deb_args[@]}")
echo "$out"
