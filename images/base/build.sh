#!/usr/bin/env bash
# Builds the base image every other image starts from, without any container registry:
# debootstrap a minimal Debian bookworm with python3, then `podman import` it.
# The image in podman's storage is the cache: nothing happens when it already exists.
# Containerfiles name a public FROM (debian:bookworm-slim ...) and build offline with
# `podman build --from localhost/markco-base:bookworm`.
set -euo pipefail
IMAGE=${MARKCO_BASE_IMAGE:-localhost/markco-base:bookworm}
MIRROR=${MARKCO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Packages beyond minbase: python3 (full, for http.server), tini as PID 1, and what user sessions expect.
INCLUDE=python3,tini,ca-certificates,procps

if podman image exists "$IMAGE"; then exit 0; fi
command -v debootstrap >/dev/null || { echo "images/base/build.sh: debootstrap is not installed" >&2; exit 1; }
work=$(mktemp -d /var/tmp/markco-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "[base-image] debootstrap bookworm ($INCLUDE) from $MIRROR" >&2
debootstrap --variant=minbase --include="$INCLUDE" bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/tmp/*
echo "[base-image] importing as $IMAGE" >&2
tar -C "$work/rootfs" --numeric-owner -c . | podman import --change 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
