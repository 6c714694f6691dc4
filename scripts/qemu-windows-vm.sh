#!/usr/bin/env bash
# A Windows 10/11 x64 test VM with QEMU's edu device, for the edudma driver.
#
# 6 GiB of RAM: most pages lie above 256 MiB, the edu device's 28-bit DMA
# limit, so the HAL must bounce them through map registers (the path the
# driver exists to exercise). q35 + OVMF (UEFI; Windows 11 also needs the
# TPM below), virtio disk and network (load the virtio-win drivers during
# setup), or set DISK_IF=ide / NIC_MODEL=e1000 for in-box drivers.
#
# Usage:
#   scripts/qemu-windows-vm.sh DISK.qcow2 [WINDOWS.iso] [VIRTIO-WIN.iso]
# Environment: MEM (6G), CPUS (4), OVMF_CODE, OVMF_VARS (a writable copy is
# made next to the disk), DISK_IF (virtio|ide), NIC_MODEL (virtio-net-pci|
# e1000), EDU_DMA_MASK (edu dma_mask, default the device's 0x0FFFFFFF),
# SWTPM_SOCK (swtpm socket for Windows 11), ACCEL (kvm|tcg, default kvm when
# /dev/kvm is usable). The guest's RDP is forwarded to localhost:3389 only.
set -euo pipefail

disk=${1:?usage: $0 DISK.qcow2 [WINDOWS.iso] [VIRTIO-WIN.iso]}
install_iso=${2:-}
virtio_iso=${3:-}

mem=${MEM:-6G}
cpus=${CPUS:-4}
ovmf_code=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}
ovmf_vars_template=${OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}
disk_if=${DISK_IF:-virtio}
nic_model=${NIC_MODEL:-virtio-net-pci}
accel=${ACCEL:-}
if [[ -z $accel ]]; then
    if [[ -r /dev/kvm && -w /dev/kvm ]]; then accel=kvm; else accel=tcg; fi
fi

vars="${disk%.*}.OVMF_VARS.fd"
[[ -f $vars ]] || cp "$ovmf_vars_template" "$vars"
[[ -f $disk ]] || qemu-img create -f qcow2 "$disk" 64G

edu=(-device edu)
if [[ -n ${EDU_DMA_MASK:-} ]]; then
    edu=(-device "edu,dma_mask=${EDU_DMA_MASK}")
fi

args=(
    -machine q35,accel="$accel"
    # S3 for the driver's sleep/resume test (scripts/run-sleep-test.ps1);
    # the wake resets every device, edu's PCI function included.
    -global ICH9-LPC.disable_s3=0
    -cpu "$([[ $accel == kvm ]] && echo host || echo max)"
    -smp "$cpus"
    -m "$mem"
    -drive if=pflash,format=raw,readonly=on,file="$ovmf_code"
    -drive if=pflash,format=raw,file="$vars"
    -rtc base=localtime
    -usb -device usb-tablet
    -netdev user,id=net0,hostfwd=tcp:127.0.0.1:3389-:3389
    -device "$nic_model",netdev=net0
    "${edu[@]}"
)
if [[ $disk_if == virtio ]]; then
    args+=(-drive file="$disk",if=none,id=disk0,format=qcow2 -device virtio-blk-pci,drive=disk0,bootindex=1)
else
    args+=(-drive file="$disk",if=ide,format=qcow2)
fi
[[ -n $install_iso ]] && args+=(-drive file="$install_iso",media=cdrom,index=2)
[[ -n $virtio_iso ]] && args+=(-drive file="$virtio_iso",media=cdrom,index=3)
if [[ -n ${SWTPM_SOCK:-} ]]; then
    args+=(-chardev socket,id=chrtpm,path="$SWTPM_SOCK" -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0)
fi

echo "qemu-system-x86_64 ${args[*]}" >&2
exec qemu-system-x86_64 "${args[@]}"
