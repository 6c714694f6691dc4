#Requires -RunAsAdministrator
<#
.SYNOPSIS
    Put edudma.sys under Driver Verifier: DMA checking (0x80), IRQL checking
    (0x2) and DDI compliance checking (0x20000), i.e. /flags 0x20082.
.DESCRIPTION
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
    # 0x00000080 DMA checking | 0x00000002 IRQL checking | 0x00020000 DDI compliance checking
    verifier /flags 0x20082 /driver edudma.sys
}
# verifier returns 2 when it changed the settings (a reboot is needed).
if ($LASTEXITCODE -ne 0 -and $LASTEXITCODE -ne 2) {
    throw "verifier failed with exit code $LASTEXITCODE"
}
verifier /querysettings
Write-Host 'Reboot for the settings to take effect.'
if ($Restart) { Restart-Computer -Force }
