#!/usr/bin/env bash
# The Debian packages the bundle's smoke test needs (tests/test_bundle.py): a virtual X server and a
# tool to find windows on it, screenshots, the xcb libraries Qt's X11 platform plugin loads that a
# server image lacks, and the .desktop file checker. Needs root (.ci/run runs as root); installs
# nothing when every package is there already.
set -euo pipefail
packages=(xvfb xdotool imagemagick libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 desktop-file-utils)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
