#!/usr/bin/env bash
# Builds the base image every other image starts from, without any container registry:
# debootstrap a minimal Debian bookworm with python3, then `podman import` it.
# The image in podman's storage is the cache: nothing happens when it already exists.
# Containerfiles name a public FROM (debian:bookworm-slim ...) and build offline with
# `podman build --from localhost/markco-base:bookworm`.
set -euo pipefail
IMAGE=${MARKCO_BASE_IMAGE:-localhost/markco-base:bookworm}
MIRROR=${MARKCO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Packages beyond minbase: python3 (full, for http.server) with venv, tini as PID 1, and what user
# sessions expect.
INCLUDE=python3,python3-venv,tini,ca-certificates,procps
# The image is rebuilt when this recipe changes (a label carries its hash).
RECIPE=$(printf '%s\n' "bookworm minbase $INCLUDE v2" | sha256sum | cut -c1-16)

if podman image exists "$IMAGE" \
  && [ "$(podman image inspect --format '{{index .Labels "ai.markco.recipe"}}' "$IMAGE")" = "$RECIPE" ]; then
  exit 0
fi
command -v debootstrap >/dev/null || { echo "images/base/build.sh: debootstrap is not installed" >&2; exit 1; }
previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
work=$(mktemp -d /var/tmp/markco-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "[base-image] debootstrap bookworm ($INCLUDE) from $MIRROR" >&2
debootstrap --variant=minbase --include="$INCLUDE" bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/tmp/*
echo "[base-image] importing as $IMAGE" >&2
tar -C "$work/rootfs" --numeric-owner -c . | podman import --change 'CMD ["/bin/bash"]' --change "LABEL ai.markco.recipe=$RECIPE" - "$IMAGE" >/dev/null
# The image this one replaces, unless a container or another tag still uses it.
[ -z "$previous" ] || podman rmi "$previous" >/dev/null 2>&1 || true
