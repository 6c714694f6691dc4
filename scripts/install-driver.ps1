#Requires -RunAsAdministrator
<#
.SYNOPSIS
    Install the edudma driver package on the test VM.
.DESCRIPTION
    Imports the package's test certificate into the machine's Trusted Root
    and Trusted Publishers stores, then adds the package to the driver store
    and installs it on the edu device with pnputil.
.PARAMETER PackageDir
    The package folder cargo make produced (edudma_package: edudma.sys,
    edudma.inf, edudma.cat, WDRLocalTestCert.cer).
#>
param(
    [Parameter(Mandatory = $true)][string]$PackageDir
)
$ErrorActionPreference = 'Stop'

$inf = Join-Path $PackageDir 'edudma.inf'
$cer = Join-Path $PackageDir 'WDRLocalTestCert.cer'
foreach ($f in @($inf, $cer, (Join-Path $PackageDir 'edudma.sys'), (Join-Path $PackageDir 'edudma.cat'))) {
    if (-not (Test-Path $f)) { throw "missing $f (build the package with 'cargo make' first)" }
}

foreach ($store in @('Cert:\LocalMachine\Root', 'Cert:\LocalMachine\TrustedPublisher')) {
    Import-Certificate -FilePath $cer -CertStoreLocation $store | Out-Null
    Write-Host "Imported $cer into $store"
}

pnputil /add-driver $inf /install
# 259 (ERROR_NO_MORE_ITEMS) means: added, but no device needed it.
if ($LASTEXITCODE -ne 0 -and $LASTEXITCODE -ne 259 -and $LASTEXITCODE -ne 3010) {
    throw "pnputil /add-driver failed with exit code $LASTEXITCODE"
}
if ($LASTEXITCODE -eq 3010) { Write-Host 'pnputil asks for a reboot.' }

Write-Host 'The edu device now:'
pnputil /enum-devices /deviceid 'PCI\VEN_1234&DEV_11E8' /drivers
