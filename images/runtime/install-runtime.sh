#!/bin/sh
# The runtime's installation, shared by the CPU and GPU Containerfiles (run from the build context,
# copied to /tmp/build): Python with venv and tini from the distribution when the base lacks them, the
# pinned mrmd-python environment in /opt/mrmd (from wheels/ when the build is offline, else PyPI), the
# start script, and the unprivileged user whose home is the user's files.
set -eu
if ! command -v python3 >/dev/null || ! command -v tini >/dev/null || ! python3 -c 'import ensurepip' 2>/dev/null; then
  apt-get update
  apt-get install -y --no-install-recommends python3 python3-venv tini ca-certificates
  rm -rf /var/lib/apt/lists/*
fi
python3 -m venv /opt/mrmd
if [ -d /tmp/build/wheels ]; then
  /opt/mrmd/bin/pip install --no-cache-dir --no-index --find-links /tmp/build/wheels -r /tmp/build/requirements.txt
else
  /opt/mrmd/bin/pip install --no-cache-dir -r /tmp/build/requirements.txt
fi
install -m 0755 /tmp/build/start-runtime.sh /usr/local/bin/markco-start-runtime
# Some bases (Ubuntu's) already have a uid 1000 user: the runtime's user replaces it.
if id -u 1000 >/dev/null 2>&1; then userdel "$(id -un 1000)" 2>/dev/null || true; fi
useradd --uid 1000 --home-dir /home/user --no-create-home --shell /bin/bash user
mkdir -p /home/user
chown 1000:1000 /home/user
