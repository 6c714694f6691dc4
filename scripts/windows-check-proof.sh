#!/usr/bin/env bash
# Proof that scripts/windows-check.sh really compiles src/: each mutation
# below is applied to a scratch copy of the tree, and the check must fail on
# it with the expected rustc error. Exits non-zero if the check lets any
# mutation through (or fails on the unmutated copy).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
scratch=$repo/target/windows-check-proof
passed=0
failed=0

# name | file | sed expression | rustc error the check must report
mutations=(
  "wrong field path|src/ffi.rs|s/\\.CurrentStackLocation\$/.CurrentStackLocations/|error[E0609]"
  "wrong integer width (ULONG as u64)|src/ffi.rs|s/pub unsafe fn mdl_byte_count(mdl: \\*mut MDL) -> u32/pub unsafe fn mdl_byte_count(mdl: *mut MDL) -> u64/|error[E0308]"
)

fresh_copy() {
  rm -rf "$scratch/tree"
  mkdir -p "$scratch/tree"
  tar -C "$repo" --exclude=./target --exclude=./.git -cf - . | tar -C "$scratch/tree" -xf -
}

# The unmutated copy must pass, so that each failure below is the mutation's.
fresh_copy
if bash "$repo/scripts/windows-check.sh" --tree "$scratch/tree" --driver-only > "$scratch/baseline.txt" 2>&1; then
  echo "ok: the unmutated copy passes the check"
  passed=$((passed + 1))
else
  echo "FAIL: the unmutated copy fails the check:"
  tail -20 "$scratch/baseline.txt"
  failed=$((failed + 1))
fi

for m in "${mutations[@]}"; do
  IFS='|' read -r name file expr expected <<<"$m"
  fresh_copy
  before=$(md5sum "$scratch/tree/$file")
  sed -i "$expr" "$scratch/tree/$file"
  if [ "$before" = "$(md5sum "$scratch/tree/$file")" ]; then
    echo "FAIL: mutation '$name' changed nothing in $file (stale expression)"
    failed=$((failed + 1))
    continue
  fi
  if out=$(bash "$repo/scripts/windows-check.sh" --tree "$scratch/tree" --driver-only 2>&1); then
    echo "FAIL: the check passed with mutation '$name'"
    failed=$((failed + 1))
  elif grep -qF "$expected" <<<"$out"; then
    echo "ok: mutation '$name' fails the check with $expected"
    passed=$((passed + 1))
  else
    echo "FAIL: mutation '$name' failed the check, but without $expected:"
    tail -20 <<<"$out"
    failed=$((failed + 1))
  fi
done
rm -rf "$scratch"
echo "windows-check proof: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
