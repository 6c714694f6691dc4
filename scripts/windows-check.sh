#!/usr/bin/env bash
# Type-check and lint the Windows driver (src/, package `edudma`) and the
# Windows backend of edudmactl for x86_64-pc-windows-msvc, on Linux.
#
# The real wdk crates build only on Windows with the WDK. Here the check
# substitutes two stand-ins (crates/wdk-sys-standin, crates/wdk-build-standin)
# whose bindings bindgen generates at build time, with wdk-build 0.6.0's
# settings, from Debian's mingw-w64 DDK headers plus the project's DMA-v3
# supplement. The substitution is a [patch] in a .cargo/config.toml above a
# scratch copy of the tree, so nothing outside this check sees it: a
# Windows user's `cargo make` still gets the real wdk-sys.
#
# Usage: scripts/windows-check.sh [--tree DIR] [--driver-only]
#   --tree DIR     check the sources in DIR (a copy of this repository)
#                  instead of this repository; used by the mutation test.
#   --driver-only  check and lint the driver package only (no edudmactl,
#                  no layout check); used by the mutation test.
# Then lints the same src/ built for the Linux host (crates/edudma-driver-host)
# and runs crates/wdk-layout-check: the layouts src/ relies on against
# windows-sys's WDK metadata, rendered as docs/wdk-names.md.
# Prints every diagnostic, then the counts; exits 0 only with 0 errors,
# 0 warnings and a passing layout check.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
tree=$repo
driver_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tree) tree=$(cd "$2" && pwd); shift 2 ;;
    --driver-only) driver_only=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "windows-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }

# ---- what the generation needs: Debian's headers and libclang --------------
bash "$repo/scripts/setup.sh"
rustup target add x86_64-pc-windows-msvc >/dev/null 2>&1 || true

clang_bin=$(readlink -f "$(command -v clang)")
export LIBCLANG_PATH
LIBCLANG_PATH=$(cd "$(dirname "$clang_bin")/../lib" && pwd)
export WDK_STANDIN_CLANG_RESOURCE_DIR
WDK_STANDIN_CLANG_RESOURCE_DIR=$(clang -print-resource-dir)
export WDK_STANDIN_MINGW_INCLUDE=/usr/share/mingw-w64/include

# ---- a scratch copy of the tree, under a config that patches the wdk crates --
scratch=$repo/target/windows-check
copy=$scratch/tree
mkdir -p "$scratch/.cargo"
cat > "$scratch/.cargo/config.toml" <<EOF
# Written by scripts/windows-check.sh; applies to the copy below only.
[patch.crates-io]
# The copy's own stand-ins: edudma-sim names the same path, and one
# package may have only one source in the lockfile.
wdk-sys = { path = "$copy/crates/wdk-sys-standin" }
wdk-build = { path = "$copy/crates/wdk-build-standin" }
EOF
rm -rf "$copy"
mkdir -p "$copy"
# -m: every file gets the time of the copy, so cargo never takes a cached
# result of a different tree (the proof copies mutated trees here) as fresh.
tar -C "$tree" --exclude=./target --exclude=./.git -cf - . | tar -C "$copy" -xmf -
export CARGO_TARGET_DIR=$scratch/target

# ---- the checks ----------------------------------------------------------------
log=$scratch/diagnostics.txt
: > "$log"
failed=0
# run DIR COMMAND...: run COMMAND in DIR, keep its output for the counts.
run() {
  local dir=$1
  shift
  step "$*"
  local status=0
  (cd "$dir" && "$@") > "$scratch/last.txt" 2>&1 || status=$?
  cat "$scratch/last.txt" >> "$log"
  grep -vE '^\s*(Compiling|Checking|Blocking|Updating|Locking|Adding|Downloaded|Downloading|Finished)' "$scratch/last.txt" || true
  [ "$status" -eq 0 ] || failed=1
}
short=(--message-format short --target x86_64-pc-windows-msvc)
run "$copy" cargo check -p edudma "${short[@]}"
run "$copy" cargo clippy -p edudma --all-targets "${short[@]}" -- -D warnings
layout_status=0
if [ "$driver_only" -eq 0 ]; then
  run "$copy" cargo check -p edudmactl "${short[@]}"
  run "$copy" cargo clippy -p edudmactl --all-targets "${short[@]}" -- -D warnings
  # The same src/ for the Linux host (cfg(edudma_host)), against the host
  # variant of the stand-in: the build the simulator is to run.
  run "$tree" cargo clippy --manifest-path "$tree/crates/edudma-driver-host/Cargo.toml" \
    --all-targets --message-format short -- -D warnings
  # The stand-in's layouts against Microsoft's metadata (host build; renders
  # docs/wdk-names.md, which WDK_NAMES_BLESS=1 rewrites in the checked tree).
  step "layouts and names of src/ against windows-sys's WDK metadata"
  cargo test --manifest-path "$tree/crates/wdk-layout-check/Cargo.toml" --message-format short \
    > "$scratch/last.txt" 2>&1 || layout_status=$?
  cat "$scratch/last.txt" >> "$log"
  grep -E '^(test |error|warning|thread|layout differences|[A-Z_]+ )|panicked|DIFFERENT|docs/wdk-names' "$scratch/last.txt" || true
  run "$tree" cargo clippy --manifest-path "$tree/crates/wdk-layout-check/Cargo.toml" --all-targets \
    --message-format short -- -D warnings
fi

# A diagnostic line in short format: path:line:col: level[code]: message
errors=$(grep -cE '^[^ ]+\.rs:[0-9]+:[0-9]+: error' "$log" || true)
warnings=$(grep -cE '^[^ ]+\.rs:[0-9]+:[0-9]+: warning' "$log" || true)
in_src=$(grep -cE '^src/[^ ]+\.rs:[0-9]+:[0-9]+: (error|warning)' "$log" || true)
if [ "$failed" -ne 0 ] && [ "$errors" -eq 0 ]; then
  # cargo failed without a Rust diagnostic (generation, resolution): count it.
  errors=1
  echo "windows-check: cargo failed before any Rust diagnostic; see above" >&2
fi
layout="layout check passed"
[ "$layout_status" -eq 0 ] || layout="LAYOUT CHECK FAILED"
[ "$driver_only" -eq 0 ] || layout="layout check skipped"
printf '\nwindows-check: %s; %s errors, %s warnings (%s of them in src/)\n' "$layout" "$errors" "$warnings" "$in_src"
[ "$errors" -eq 0 ] && [ "$warnings" -eq 0 ] && [ "$layout_status" -eq 0 ]
