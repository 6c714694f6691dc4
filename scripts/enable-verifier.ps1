#Requires -RunAsAdministrator
<#
.SYNOPSIS
    Put edudma.sys under Driver Verifier's standard settings (/standard),
    which include DMA checking (0x80) and DDI compliance checking (0x20000).
.DESCRIPTION
    /standard is flags 0x209BB: special pool (0x1), force IRQL checking
    (0x2), pool tracking (0x8), I/O verification (0x10), deadlock detection
    (0x20), DMA checking (0x80), security checks (0x100), miscellaneous
    checks (0x800) and DDI compliance checking (0x20000). DMA checking is
    what the project is held to (bug check 0xE6); DDI compliance checking
    enforces the IRQL and spin-lock rules (bug check 0xC4).

    The settings are stored and take effect after a reboot. A violation is a
    bug check (0xE6 for DMA, 0xC4 for IRQL/DDI rules): run the VM with a
    kernel debugger or keep the memory dump.
.PARAMETER Reset
    Turn Driver Verifier off instead (also needs a reboot).
.PARAMETER Restart
    Reboot right away.
#>
param([switch]$Reset, [switch]$Restart)
$ErrorActionPreference = 'Stop'

if ($Reset) {
    verifier /reset
} else {
    # The standard settings (0x209BB), DMA checking and DDI compliance included.
    verifier /standard /driver edudma.sys
}
# verifier returns 2 when it changed the settings (a reboot is needed).
if ($LASTEXITCODE -ne 0 -and $LASTEXITCODE -ne 2) {
    throw "verifier failed with exit code $LASTEXITCODE"
}
verifier /querysettings
Write-Host 'Reboot for the settings to take effect.'
if ($Restart) { Restart-Computer -Force }
