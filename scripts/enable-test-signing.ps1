#Requires -RunAsAdministrator
<#
.SYNOPSIS
    Let the test VM load test-signed drivers (edudma.sys is signed with the
    WDRLocalTestCert certificate the cargo-make flow creates).
.DESCRIPTION
    Sets the boot option TESTSIGNING. Secure Boot must be off in the VM's
    firmware (OVMF: Device Manager > Secure Boot Configuration), otherwise
    Windows refuses the option. Takes effect after a reboot.
.PARAMETER Restart
    Reboot right away.
#>
param([switch]$Restart)
$ErrorActionPreference = 'Stop'

try {
    $secureBoot = Confirm-SecureBootUEFI
} catch {
    $secureBoot = $false   # legacy BIOS, or the cmdlet is unsupported
}
if ($secureBoot) {
    throw 'Secure Boot is on: turn it off in the VM firmware, then run this again.'
}

bcdedit /set testsigning on
if ($LASTEXITCODE -ne 0) { throw "bcdedit failed with exit code $LASTEXITCODE" }
Write-Host 'Test signing is on after the next reboot (a "Test Mode" watermark shows).'
if ($Restart) { Restart-Computer -Force }
