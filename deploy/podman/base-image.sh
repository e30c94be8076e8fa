#!/usr/bin/env bash
# Make localhost/debian-python:bookworm (Debian bookworm + python3) with debootstrap, for machines
# that cannot pull images. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
image=localhost/debian-python:bookworm
if podman image exists "$image"; then echo "$image exists"; exit 0; fi
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
         | grep -oE '^(deb|URIs:) +https?://[^ ]+' | grep -v security | head -1 | awk '{print $2}' || true)
mirror=${mirror:-http://deb.debian.org/debian}
rootfs="$PRESSO_PODMAN_DIR/rootfs"
rm -rf "$rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" >/dev/null
tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$image"
rm -rf "$rootfs"
