<#
.SYNOPSIS
    After a run on the test VM: collect Driver Verifier's view, the driver's
    self-test and its statistics into one log.
.DESCRIPTION
    Runs, in order, `verifier /query` (is edudma.sys verified, with which
    flags, and its counters), `edudmactl --json info`, `edudmactl selftest`
    (register/interrupt self-test plus DMA round trips through the IOCTLs
    and ReadFile/WriteFile), `edudmactl --json stats`, and `verifier /query`
    again. Exits non-zero when the self-test fails or edudma.sys is not
    under Driver Verifier.
.PARAMETER Edudmactl
    Path of edudmactl.exe (default: next to this script's repository build).
.PARAMETER LogDir
    Where the log goes (default: .\edudma-logs).
#>
param(
    [string]$Edudmactl = (Join-Path $PSScriptRoot '..\target\release\edudmactl.exe'),
    [string]$LogDir = (Join-Path (Get-Location) 'edudma-logs')
)
$ErrorActionPreference = 'Continue'

New-Item -ItemType Directory -Force -Path $LogDir | Out-Null
$stamp = Get-Date -Format 'yyyyMMdd-HHmmss'
$log = Join-Path $LogDir "selftest-$stamp.log"

function Step([string]$title, [scriptblock]$body) {
    # Everything is shown and logged, never returned: only the exit code is.
    "===== $title =====" | Tee-Object -FilePath $log -Append | Out-Host
    $out = & $body 2>&1
    $code = $LASTEXITCODE
    $out | Tee-Object -FilePath $log -Append | Out-Host
    "----- exit code $code" | Tee-Object -FilePath $log -Append | Out-Host
    return $code
}

if (-not (Test-Path $Edudmactl)) { throw "edudmactl.exe not found at $Edudmactl" }

$null = Step 'verifier /query (before)' { verifier /query }
$verified = (verifier /query | Out-String) -match '(?i)edudma\.sys'
$null = Step 'edudmactl --json info' { & $Edudmactl --json info }
$selftest = Step 'edudmactl selftest' { & $Edudmactl selftest }
$null = Step 'edudmactl --json stats' { & $Edudmactl --json stats }
$null = Step 'verifier /query (after)' { verifier /query }

"selftest exit code: $selftest; edudma.sys under Driver Verifier: $verified" | Tee-Object -FilePath $log -Append | Out-Host
Write-Host "Log: $log"
if ($selftest -ne 0) { exit $selftest }
if (-not $verified) { exit 4 }
exit 0
