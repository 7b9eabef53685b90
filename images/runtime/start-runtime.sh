#!/bin/sh
# mrmd-python refuses to start when its registry names a live pid; after a restore or a reboot the
# file is stale (the pid belongs to another life), so it goes first. In foreground mode mrmd-python
# writes its log into ~/.mrmd/logs/<id>.log: pointing that name at our stdout sends the log to
# `podman logs` instead of into the user's files.
set -eu
id=default
mkdir -p "$HOME/.mrmd/runtimes" "$HOME/.mrmd/logs"
rm -f "$HOME/.mrmd/runtimes/$id.json"
ln -sfn /proc/self/fd/1 "$HOME/.mrmd/logs/$id.log"
exec mrmd-python --foreground --host 0.0.0.0 --port 8888 --id "$id" --cwd "$HOME"
