#!/usr/bin/env bash
# Installs Orthanc and its DICOMweb plugin from Debian's packages if missing,
# without leaving the packaged daemon running (tests start their own).
set -euo pipefail
if command -v Orthanc >/dev/null 2>&1 && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
policy=/usr/sbin/policy-rc.d
added=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 0755 "$policy"
    added=1
fi
$SUDO apt-get update -qq >/dev/null
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb >/dev/null
[ "$added" = 1 ] && $SUDO rm -f "$policy"
$SUDO pkill -x Orthanc 2>/dev/null || true
