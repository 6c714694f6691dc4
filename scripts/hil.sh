#!/usr/bin/env bash
# Hardware-in-the-loop run: the unchanged edudma-core engine drives QEMU's own
# `edu` device inside a small Linux guest (software emulation, no network).
#
#   scripts/hil.sh            the standard suite (a few minutes on two cores)
#   scripts/hil.sh --sweep    also every DMA length 1..4095 (about 15 minutes)
#   scripts/hil.sh --quick    self-test, conformance and a handful of DMAs
#   scripts/hil.sh --mode=probe-count0   a fidelity probe (expected to crash QEMU 7.2)
#   HIL_SEED=n scripts/hil.sh             other random cases (the default seed is fixed)
#
# The guest runs the suite with INTx through uio_pci_generic, then its
# interrupt-driven phases again with MSI through vfio-pci (type1 over QEMU's
# virtual intel-iommu, which the INTx part sees in pass-through; Debian's
# kernel has no CONFIG_VFIO_NOIOMMU). Both sets' counts are printed.
#
# It installs what it needs (Debian packages: qemu-system-x86, busybox-static,
# a Debian kernel package unpacked into scripts/.hil-work; the musl target),
# builds the harness as a static binary, packs an initramfs, boots it, and reads
# the verdict from the serial console. Exit status: 0 only when the guest printed
# `HIL RESULT: PASS`, the harness exited 0, QEMU powered off cleanly, and QEMU
# logged no guest error of the edu device (address clamping or range errors).
set -euo pipefail

# All of it in one function, so that bash has read the whole script before it
# runs any of it (editing the file during a long run cannot derail it).
main() {

    ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    WORK="${HIL_WORK:-$ROOT/scripts/.hil-work}"
    TARGET=x86_64-unknown-linux-musl
    TIMEOUT="${HIL_TIMEOUT:-900}"
    MODE=standard
    for arg in "$@"; do
        case "$arg" in
            --sweep) MODE=sweep ;;
            --quick) MODE=quick ;;
            --mode=*) MODE="${arg#--mode=}" ;;
            -h | --help)
                sed -n '2,21p' "$0"
                exit 0
                ;;
            *)
                echo "hil.sh: unknown argument $arg" >&2
                exit 2
                ;;
        esac
    done

    log() { printf '[hil] %s\n' "$*" >&2; }
    cd "$ROOT" # rust-toolchain.toml picks the toolchain the musl target is added to
    mkdir -p "$WORK"

    # --- 1. Host packages ---------------------------------------------------------
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    need_pkgs=()
    command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
    dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
    if [ "${#need_pkgs[@]}" -gt 0 ]; then
        log "installing ${need_pkgs[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    fi
    BUSYBOX=/bin/busybox

    # --- 2. Kernel and modules (unpacked, never installed) --------------------------
    KDIR="$WORK/kernel"
    if ! ls "$KDIR"/boot/vmlinuz-* >/dev/null 2>&1 || ! ls "$KDIR"/lib/modules/*/kernel/drivers/uio/uio_pci_generic.ko >/dev/null 2>&1 ||
        ! ls "$KDIR"/lib/modules/*/kernel/drivers/vfio/pci/vfio-pci.ko >/dev/null 2>&1; then
        kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
        if [ -z "$kpkg" ]; then
            $SUDO apt-get update -qq
            kpkg=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
        fi
        [ -n "$kpkg" ] || { echo "hil.sh: cannot resolve linux-image-amd64" >&2; exit 1; }
        log "fetching kernel package $kpkg"
        rm -rf "$KDIR" "$WORK/deb"
        mkdir -p "$KDIR" "$WORK/deb"
        (cd "$WORK/deb" && apt-get download -q "$kpkg" 2>&1 | grep -v 'unsandboxed' >&2 || true)
        deb=$(ls "$WORK"/deb/*.deb | head -n1)
        # Only what the guest needs: the kernel image, the uio modules (INTx)
        # and the vfio modules (MSI; Debian's kernel has no CONFIG_VFIO_NOIOMMU,
        # so vfio runs with type1 over QEMU's virtual IOMMU).
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$KDIR" --wildcards '*/vmlinuz-*' '*/drivers/uio/uio.ko' '*/drivers/uio/uio_pci_generic.ko' \
            '*/virt/lib/irqbypass.ko' '*/drivers/vfio/vfio.ko' '*/drivers/vfio/vfio_iommu_type1.ko' '*/drivers/vfio/vfio_virqfd.ko' \
            '*/drivers/vfio/pci/vfio-pci-core.ko' '*/drivers/vfio/pci/vfio-pci.ko'
        rm -rf "$WORK/deb"
    fi
    VMLINUZ=$(ls "$KDIR"/boot/vmlinuz-* | head -n1)
    UIO_KO=$(ls "$KDIR"/lib/modules/*/kernel/drivers/uio/uio.ko | head -n1)
    UIO_PCI_KO=$(ls "$KDIR"/lib/modules/*/kernel/drivers/uio/uio_pci_generic.ko | head -n1)
    KMODS=$(dirname "$(dirname "$(dirname "$UIO_KO")")") # .../lib/modules/<version>/kernel
    # scripts/hil/init loads them in this order (each after what it needs).
    VFIO_KOS=("$KMODS/virt/lib/irqbypass.ko" "$KMODS/drivers/vfio/vfio.ko" "$KMODS/drivers/vfio/vfio_iommu_type1.ko"
        "$KMODS/drivers/vfio/vfio_virqfd.ko" "$KMODS/drivers/vfio/pci/vfio-pci-core.ko" "$KMODS/drivers/vfio/pci/vfio-pci.ko")

    # --- 3. The harness, static -----------------------------------------------------
    if command -v rustup >/dev/null && ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
        log "adding rust target $TARGET"
        rustup target add "$TARGET" >/dev/null
    fi
    log "building edudma-hil for $TARGET"
    (cd "$ROOT" && cargo build --quiet --release -p edudma-hil --target "$TARGET")
    TDIR="${CARGO_TARGET_DIR:-$ROOT/target}"
    case "$TDIR" in /*) ;; *) TDIR="$ROOT/$TDIR" ;; esac
    HARNESS="$TDIR/$TARGET/release/edudma-hil"
    [ -x "$HARNESS" ] || { echo "hil.sh: $HARNESS not built" >&2; exit 1; }

    # --- 4. Initramfs ---------------------------------------------------------------
    IRD="$WORK/initramfs"
    rm -rf "$IRD"
    mkdir -p "$IRD"/{bin,sbin,proc,sys,dev,tmp,lib/modules}
    cp "$BUSYBOX" "$IRD/bin/busybox"
    for tool in sh mount insmod poweroff echo cat sleep sysctl; do ln -s busybox "$IRD/bin/$tool"; done
    cp "$UIO_KO" "$UIO_PCI_KO" "${VFIO_KOS[@]}" "$IRD/lib/modules/"
    cp "$HARNESS" "$IRD/bin/edudma-hil"
    cp "$ROOT/scripts/hil/init" "$IRD/init"
    chmod 755 "$IRD/init" "$IRD/bin/edudma-hil"
    (cd "$IRD" && find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc 2>/dev/null | gzip -1) >"$WORK/initramfs.gz"

    # --- 5. Boot ---------------------------------------------------------------------
    SERIAL="$WORK/serial.log"
    QLOG="$WORK/qemu.log"
    rm -f "$SERIAL" "$QLOG"
    log "booting the guest (mode $MODE, timeout ${TIMEOUT}s)"
    start=$(date +%s)
    set +e
    timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 \
        -accel tcg -M q35 -m 512 -smp 1 -nographic -no-reboot \
        -kernel "$VMLINUZ" -initrd "$WORK/initramfs.gz" \
        -append "console=ttyS0 quiet loglevel=3 panic=-1 transparent_hugepage=never intel_iommu=on iommu=pt HIL_MODE=$MODE HIL_SEED=${HIL_SEED:-default}" \
        -device intel-iommu,intremap=off -device edu -nic none \
        -d guest_errors -D "$QLOG" \
        </dev/null 2>"$WORK/qemu.stderr" | tee "$SERIAL"
    qrc=${PIPESTATUS[0]}
    set -e
    elapsed=$(($(date +%s) - start))

    # --- 6. Verdict --------------------------------------------------------------------
    fail=()
    if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
        fail+=("timeout after ${TIMEOUT}s")
    elif [ "$qrc" != 0 ]; then
        fail+=("QEMU exited with status $qrc (crash or device-side abort)")
    fi
    if [ -s "$WORK/qemu.stderr" ]; then
        log "QEMU stderr:"
        cat "$WORK/qemu.stderr" >&2
        grep -q 'EDU:' "$WORK/qemu.stderr" && fail+=("QEMU reported an edu device error")
    fi
    tr -d '\r' <"$SERIAL" >"$SERIAL.clean"
    # The only edu guest errors allowed are the address clamps the harness
    # provokes on purpose (its negative control of the bounce path) — as many as
    # it announced, no more.
    want_clamps=$(sed -n 's/^HIL EXPECT-CLAMPS \([0-9]*\)$/\1/p' "$SERIAL.clean" | awk '{s += $1} END {print s + 0}')
    # QEMU 7.2 prints the clamp on its stdout (the console), newer ones in the
    # guest-error log: look in both.
    touch "$QLOG"
    edu_errors=$(cat "$QLOG" "$SERIAL.clean" | grep -o 'EDU: .*' || true)
    clamps=$(printf '%s\n' "$edu_errors" | grep -c '^EDU: clamping' || true)
    others=$(printf '%s\n' "$edu_errors" | grep -c '^EDU: [^c]' || true)
    if [ "$others" != 0 ] || [ "$clamps" != "$want_clamps" ]; then
        log "edu device errors:"
        printf '%s\n' "$edu_errors" | head -n 20 >&2
        fail+=("the edu device logged $clamps address clamps (expected $want_clamps) and $others other errors")
    elif [ "$clamps" != 0 ]; then
        log "the edu device clamped $clamps DMA address(es), as the negative control intends"
    fi
    grep -q '^HIL-EXIT 0$' "$SERIAL.clean" || fail+=("the harness did not exit 0")
    grep -q '^HIL RESULT: PASS' "$SERIAL.clean" || fail+=("no 'HIL RESULT: PASS' on the console")
    grep '^TRACE ' "$SERIAL.clean" >"$WORK/real-trace.txt" || true
    # The device must still behave as recorded (scripts/hil/edu-trace.qemu-7.2.txt,
    # the reference the simulator's edu model is held to).
    GOLDEN="$ROOT/scripts/hil/edu-trace.qemu-$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\.[0-9]*\).*/\1/p').txt"
    if [ -s "$WORK/real-trace.txt" ] && [ -f "$GOLDEN" ]; then
        "$TDIR/$TARGET/release/edudma-hil" compare "$GOLDEN" "$WORK/real-trace.txt" >"$WORK/trace-diff.txt" || {
            cat "$WORK/trace-diff.txt" >&2
            fail+=("the device's conformance trace differs from $(basename "$GOLDEN")")
        }
        tail -n1 "$WORK/trace-diff.txt" >&2
    elif [ -s "$WORK/real-trace.txt" ]; then
        log "no recorded trace for this QEMU version ($GOLDEN): keeping $WORK/real-trace.txt"
    fi

    counts=$(grep -m1 '^HIL [0-9]* passed, [0-9]* failed' "$SERIAL.clean" | sed 's/^HIL //' || true)
    # The two phase sets: INTx through uio_pci_generic, MSI through vfio-pci.
    sets=$(grep '^HIL \(INTx\|MSI\) phases: ' "$SERIAL.clean" | sed 's/^HIL /hil: /' || true)
    [ -n "$sets" ] || fail+=("no per-set counts (INTx and MSI phases) on the console")
    [ -n "$sets" ] && printf '%s\n' "$sets"
    if [ "${#fail[@]}" -gt 0 ]; then
        [ -n "$counts" ] && echo "hil: $counts"
        for f in "${fail[@]}"; do echo "hil.sh: FAIL: $f" >&2; done
        echo "hil.sh: FAILED in ${elapsed}s (serial log: $SERIAL)" >&2
        exit 1
    fi
    echo "hil.sh: PASSED in ${elapsed}s"
    echo "hil: $counts"
}

main "$@"; exit $?
