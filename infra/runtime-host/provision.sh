#!/bin/sh
# markco runtime-host recipe: turns a fresh Ubuntu 24.04 (production, EC2) or Debian 12 "bookworm"
# machine into a host the control plane can register and migrate runtimes to. Run as root; idempotent
# (every step checks before it acts, so a second run only verifies).
#
#   podman + runc (podman told to use runc), CRIU >= 4.2 (`criu check` must pass), openssh-server that
#   accepts keys only (and, when given, only the workers' key), /var/lib/markco for users' homes and
#   checkpoint scratch, and the runtime images loaded from `podman save` archives.
#
# The same file is the cloud-init first-boot script (infra/runtime-host/user-data.ts embeds it), the
# Packer provisioner (runtime-host.pkr.hcl) and what test/integration/runtime-host-recipe.test.ts runs
# inside a plain debootstrap root. Settings come from the environment:
#
#   MARKCO_AUTHORIZED_KEYS  OpenSSH public key line(s) of the workers; when set, they become the whole
#                           authorized_keys of MARKCO_SSH_USER (default: leave it to cloud-init, which
#                           installs the launch's key; a baked AMI carries no key)
#   MARKCO_SSH_USER         whose authorized_keys (default root)
#   MARKCO_IMAGE_ARCHIVES   space-separated `podman save` archives to load: paths, or http(s):// URLs
#                           (e.g. S3 presigned URLs), downloaded to /var/lib/markco/images first
#   MARKCO_HOST_DIR         the host's markco directory (default /var/lib/markco)
#   MARKCO_DEBIAN_MIRROR    Debian mirror for the CRIU suites on Debian (default http://deb.debian.org/debian)
#   MARKCO_CRIU_PPA         Ubuntu: the PPA that carries criu >= 4.2 (default ppa:criu/ppa)
#   MARKCO_APT_UPDATE       auto (default: only when apt has no candidate for a missing package), always, never
set -eu

HOST_DIR=${MARKCO_HOST_DIR:-/var/lib/markco}
SSH_USER=${MARKCO_SSH_USER:-root}
MIRROR=${MARKCO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CRIU_PPA=${MARKCO_CRIU_PPA:-ppa:criu/ppa}
APT_UPDATE=${MARKCO_APT_UPDATE:-auto}
CRIU_MIN=4.2
export DEBIAN_FRONTEND=noninteractive
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '[runtime-host] %s\n' "$*" >&2; }
die() { printf '[runtime-host] ERROR: %s\n' "$*" >&2; exit 1; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
# Booted with systemd (an EC2 instance, a Packer build), or a chroot / image build where nothing runs.
booted() { [ -d /run/systemd/system ]; }

[ "$(id -u)" = 0 ] || die "run as root"
[ -r /etc/os-release ] || die "cannot read /etc/os-release"
# shellcheck disable=SC1091
. /etc/os-release
# (Debian 12 reports no VERSION_ID once the CRIU pin below has brought forky's base-files.)
case "$ID:${VERSION_ID:-}" in
  debian:12|debian:|ubuntu:24.04) ;;
  *) log "warning: $PRETTY_NAME is neither Ubuntu 24.04 nor Debian 12; continuing" ;;
esac

# --- apt helpers ----------------------------------------------------------------------------------
APT_UPDATED=0
apt_update() { log "apt-get update"; apt-get update -qq; APT_UPDATED=1; }
# `auto` updates only when apt knows no candidate for a wanted package (a fresh instance has no lists).
apt_ready_for() {
  [ "$APT_UPDATE" = always ] && [ $APT_UPDATED = 0 ] && { apt_update; return; }
  [ "$APT_UPDATE" = never ] && return
  for p in "$@"; do
    cand=$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
    if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then [ $APT_UPDATED = 1 ] || apt_update; return; fi
  done
}
# Outside a booted system (chroot, image build) package scripts must not start daemons.
apt_install() {
  if ! booted; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi
  apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >/dev/null || { rm -f /usr/sbin/policy-rc.d; return 1; }
  rm -f /usr/sbin/policy-rc.d
}

# --- 1. packages ----------------------------------------------------------------------------------
# containernetworking-plugins + iptables: podman's CNI bridge and the published ports of runtimes.
PACKAGES="podman runc conmon containernetworking-plugins iptables openssh-server procps ca-certificates curl tar gzip zstd util-linux"
missing=
for p in $PACKAGES; do installed "$p" || missing="$missing $p"; done
if [ -n "$missing" ]; then
  # shellcheck disable=SC2086
  apt_ready_for $missing
  log "installing$missing"
  # shellcheck disable=SC2086
  apt_install $missing
fi

# --- 2. CRIU >= 4.2 -------------------------------------------------------------------------------
criu_version() { criu --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n1; }
cv=$(criu_version || true)
if [ -z "$cv" ] || ! version_ge "$cv" "$CRIU_MIN"; then
  case "$ID" in
    debian)
      # bookworm's criu 3.17 fails `criu check` on recent kernels and trixie's 4.1 fails on TCP sockets;
      # forky's 4.2.1 works. The pin (priority 100) keeps every other package on bookworm.
      log "adding Debian trixie/forky (pinned to priority 100) for criu >= $CRIU_MIN (found: ${cv:-none})"
      want_sources="Types: deb
URIs: $MIRROR
Suites: trixie forky
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
      want_pin="Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: *
Pin: release n=forky
Pin-Priority: 100"
      if [ "$(cat /etc/apt/sources.list.d/markco-criu.sources 2>/dev/null)" != "$want_sources" ] || [ "$(cat /etc/apt/preferences.d/markco-criu 2>/dev/null)" != "$want_pin" ]; then
        printf '%s\n' "$want_sources" >/etc/apt/sources.list.d/markco-criu.sources
        printf '%s\n' "$want_pin" >/etc/apt/preferences.d/markco-criu
      fi
      # auto: lists that already hold forky (a previous run, a cached apt state) need no update.
      case "$APT_UPDATE" in
        always) [ $APT_UPDATED = 1 ] || apt_update ;;
        auto) apt-cache policy criu 2>/dev/null | grep -q ' forky/main' || apt_update ;;
      esac
      apt_install -t forky criu
      ;;
    ubuntu)
      # Ubuntu 24.04 ships criu 3.x; the CRIU project's PPA (launchpad.net/~criu/+archive/ubuntu/ppa)
      # builds the current release for noble.
      log "adding $CRIU_PPA for criu >= $CRIU_MIN (found: ${cv:-none})"
      if ! command -v add-apt-repository >/dev/null 2>&1; then apt_ready_for software-properties-common; apt_install software-properties-common; fi
      add-apt-repository -y "$CRIU_PPA" >/dev/null
      apt_update
      apt_install criu
      ;;
    *) die "criu >= $CRIU_MIN is required (found: ${cv:-none}); install it and run again" ;;
  esac
  cv=$(criu_version || true)
  { [ -n "$cv" ] && version_ge "$cv" "$CRIU_MIN"; } || die "criu >= $CRIU_MIN is required but $(command -v criu || echo 'no criu') reports '${cv:-nothing}'"
fi
criu check >/dev/null 2>&1 || die "criu $cv is installed but 'criu check' fails: $(criu check 2>&1 | tail -n 3)"
log "criu $cv: criu check passes"

# --- 3. podman: runc, ulimits root may set, cgroups without systemd ---------------------------------
conf=/etc/containers/containers.conf.d/50-markco.conf
want='# written by markco infra/runtime-host/provision.sh
[containers]'
# Root without CAP_SYS_RESOURCE (some VMs and sandboxes) cannot raise nofile to podman's default of
# 1048576, and every container then fails in setrlimit: keep containers within what root may set.
if ! sh -c 'ulimit -Hn 1048576' 2>/dev/null; then
  want="$want
default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]"
fi
want="$want

[engine]
runtime = \"runc\""
# Without systemd (a chroot, a container) podman manages cgroups itself and logs events to a file.
if ! booted; then
  want="$want
cgroup_manager = \"cgroupfs\"
events_logger = \"file\""
fi
mkdir -p /etc/containers/containers.conf.d
if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
  log "writing $conf"
  printf '%s\n' "$want" >"$conf"
fi
rt=$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null || true)
[ "$rt" = runc ] || die "podman does not use runc after writing $conf (it reports '${rt:-nothing}')"
log "podman $(podman version --format '{{.Client.Version}}' 2>/dev/null) uses runc"

# --- 4. the markco directory: users' homes and checkpoint scratch ------------------------------------
mkdir -p "$HOST_DIR/users" "$HOST_DIR/scratch" "$HOST_DIR/images"
chmod 0755 "$HOST_DIR" "$HOST_DIR/users"
chmod 0700 "$HOST_DIR/scratch" "$HOST_DIR/images"
# ssh sessions (pam_env) see where transient files go.
touch /etc/environment
if ! grep -qx "MARKCO_HOST_SCRATCH_DIR=$HOST_DIR/scratch" /etc/environment; then
  sed -i '/^MARKCO_HOST_SCRATCH_DIR=/d' /etc/environment
  printf 'MARKCO_HOST_SCRATCH_DIR=%s\n' "$HOST_DIR/scratch" >>/etc/environment
fi

# --- 5. sshd: keys only; the control plane opens many channels per connection ------------------------
sshd_conf=/etc/ssh/sshd_config.d/50-markco.conf
want_sshd='# written by markco infra/runtime-host/provision.sh
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
MaxSessions 64
MaxStartups 64:30:128'
mkdir -p /etc/ssh/sshd_config.d
# Debian's and Ubuntu's sshd_config include sshd_config.d/*.conf; an older one may not.
grep -q '^Include /etc/ssh/sshd_config.d/\*.conf' /etc/ssh/sshd_config || sed -i '1i Include /etc/ssh/sshd_config.d/*.conf' /etc/ssh/sshd_config
if [ "$(cat "$sshd_conf" 2>/dev/null)" != "$want_sshd" ]; then
  log "writing $sshd_conf"
  printf '%s\n' "$want_sshd" >"$sshd_conf"
fi
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
mkdir -p /run/sshd
/usr/sbin/sshd -t || die "sshd rejects its configuration"
if [ -n "${MARKCO_AUTHORIZED_KEYS:-}" ]; then
  home=$(getent passwd "$SSH_USER" | cut -d: -f6)
  [ -n "$home" ] || die "no user $SSH_USER for the authorised key"
  keys=$(printf '%s\n' "$MARKCO_AUTHORIZED_KEYS" | sed '/^[[:space:]]*$/d')
  printf '%s\n' "$keys" | grep -qvE '^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh.com) [A-Za-z0-9+/=]+( .*)?$' && die "MARKCO_AUTHORIZED_KEYS must hold OpenSSH public key lines only"
  mkdir -p "$home/.ssh"
  if [ "$(cat "$home/.ssh/authorized_keys" 2>/dev/null)" != "$keys" ]; then
    log "authorising $(printf '%s\n' "$keys" | wc -l) key(s) for $SSH_USER (and no other)"
    printf '%s\n' "$keys" >"$home/.ssh/authorized_keys"
  fi
  chmod 0700 "$home/.ssh"; chmod 0600 "$home/.ssh/authorized_keys"
  chown -R "$SSH_USER:" "$home/.ssh"
fi
if booted; then
  systemctl enable --now ssh >/dev/null 2>&1 || systemctl enable --now sshd >/dev/null 2>&1 || true
  systemctl reload ssh >/dev/null 2>&1 || systemctl reload sshd >/dev/null 2>&1 || true
fi

# --- 6. the runtime images --------------------------------------------------------------------------
for src in ${MARKCO_IMAGE_ARCHIVES:-}; do
  case "$src" in
    http://*|https://*)
      file="$HOST_DIR/images/$(printf '%s' "$src" | sha256sum | cut -c1-16).tar"
      if [ ! -f "$file" ]; then
        log "downloading $(printf '%s' "$src" | sed 's/?.*//')"
        curl -fsSL --retry 5 -o "$file.part" "$src"
        mv "$file.part" "$file"
      fi ;;
    *) file=$src; [ -f "$file" ] || die "image archive $file does not exist" ;;
  esac
  sum=$(sha256sum "$file" | cut -d' ' -f1)
  stamp="$HOST_DIR/images/loaded-$sum"
  if [ -f "$stamp" ] && podman image exists "$(head -n1 "$stamp")" 2>/dev/null; then continue; fi
  log "podman load < $file"
  out=$(podman load --input "$file") || die "podman load failed for $file"
  name=$(printf '%s\n' "$out" | sed -n 's/^Loaded image[^:]*: *//p' | head -n1)
  printf '%s\n' "$name" >"$stamp"
  log "loaded $name"
done

log "ready: podman $(podman version --format '{{.Client.Version}}' 2>/dev/null), runc $(runc --version 2>/dev/null | sed -n 's/^runc version //p'), criu $cv"
