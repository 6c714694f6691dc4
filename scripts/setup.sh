#!/usr/bin/env bash
# What a fresh Linux machine needs besides the Rust toolchain: the simulator
# runs the driver's own sources (src/), built against wdk-sys bindings that
# bindgen generates at build time from Debian's mingw-w64 DDK headers, so
# the build needs libclang, clang and those headers. Installs them with apt
# once (sudo when not root); a no-op when they are there.
set -euo pipefail
packages=(mingw-w64-common mingw-w64-x86-64-dev libclang-dev clang)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} (apt, once)" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
