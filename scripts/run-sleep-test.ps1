<#
.SYNOPSIS
    Sleep and resume the test VM with DMA in flight, under Driver Verifier.
.DESCRIPTION
    Starts `edudmactl loopback` in the background (write, read back and
    compare, over and over, so requests are in flight and queued when the
    system sleeps), runs the WDK's `pwrtest /sleep` for -Cycles S3 cycles
    (pwrtest arms the RTC to wake the VM), waits for the loopback to finish,
    then runs run-selftest.ps1. Exits non-zero when S3 is not available,
    pwrtest fails, a byte came back wrong, or the self-test fails. A driver
    bug under Driver Verifier is a bug check instead.
.PARAMETER Edudmactl
    Path of edudmactl.exe.
.PARAMETER Pwrtest
    Path of pwrtest.exe (WDK: Windows Kits\10\Tools\<version>\x64).
.PARAMETER Cycles
    Sleep/resume cycles (default 3).
#>
param(
    [string]$Edudmactl = (Join-Path $PSScriptRoot '..\target\release\edudmactl.exe'),
    [string]$Pwrtest = (Get-ChildItem "${env:ProgramFiles(x86)}\Windows Kits\10\Tools\*\x64\pwrtest.exe" -ErrorAction SilentlyContinue | Select-Object -Last 1 -ExpandProperty FullName),
    [int]$Cycles = 3
)
$ErrorActionPreference = 'Stop'

if (-not (Test-Path $Edudmactl)) { throw "edudmactl.exe not found at $Edudmactl" }
if (-not $Pwrtest -or -not (Test-Path $Pwrtest)) { throw "pwrtest.exe not found (install the WDK or pass -Pwrtest)" }
if (-not ((powercfg /a | Out-String) -match 'Standby \(S3\)\s')) {
    powercfg /a
    Write-Error 'S3 is not available: start the VM with scripts/qemu-windows-vm.sh (S3 enabled)'
    exit 5
}

# About a minute of round trips per cycle: I/O is in flight at every sleep.
$loopback = Start-Process -FilePath $Edudmactl -PassThru -NoNewWindow `
    -ArgumentList @('loopback', '--iterations', [string](20000 * $Cycles))
& $Pwrtest /sleep /c:$Cycles /s:3 /d:30 /p:30
$pwrtestCode = $LASTEXITCODE
$loopback.WaitForExit()
"pwrtest exit code: $pwrtestCode; loopback exit code: $($loopback.ExitCode)" | Out-Host
if ($pwrtestCode -ne 0) { exit $pwrtestCode }
if ($loopback.ExitCode -ne 0) { exit $loopback.ExitCode }
& (Join-Path $PSScriptRoot 'run-selftest.ps1') -Edudmactl $Edudmactl
exit $LASTEXITCODE
