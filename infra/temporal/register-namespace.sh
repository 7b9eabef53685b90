#!/bin/sh
# markco's Temporal namespace with its retention, and the custom search attributes every markco workflow
# sets (workflows/contracts/search-attributes.ts; all Keyword: PostgreSQL visibility holds at most 10
# Keyword attributes per namespace). Idempotent: an existing namespace gets its retention updated, an
# existing attribute is left as it is. The compose file's temporal-namespace service runs it; on a host
# without containers run it once Temporal answers (docs/deploy.md). The workers register the same
# attributes when they start (lib/temporal.ts), so a cluster set up without this script still works.
#
# Environment: TEMPORAL_ADDRESS (127.0.0.1:7233), TEMPORAL_NAMESPACE (default), TEMPORAL_RETENTION (30d),
#              TEMPORAL_CLI (the `temporal` CLI; default: found on PATH)
set -eu

address=${TEMPORAL_ADDRESS:-127.0.0.1:7233}
namespace=${TEMPORAL_NAMESPACE:-default}
retention=${TEMPORAL_RETENTION:-30d}
cli=${TEMPORAL_CLI:-temporal}

# The names of workflows/contracts/search-attributes.ts (test/unit/deployment-temporal.test.ts keeps them equal).
attributes="MarkcoUserId MarkcoOperation MarkcoSourceHost MarkcoTargetHost MarkcoInstanceType MarkcoStatus MarkcoRuntimeState MarkcoHost"

# Temporal may still be starting: wait for it up to 2 minutes.
tries=0
until "$cli" operator cluster health --address "$address" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "register-namespace: Temporal at $address does not answer" >&2
    exit 1
  fi
  sleep 2
done

if "$cli" operator namespace describe --address "$address" --namespace "$namespace" >/dev/null 2>&1; then
  "$cli" operator namespace update --address "$address" --namespace "$namespace" --retention "$retention"
  echo "register-namespace: $namespace exists; retention $retention"
else
  "$cli" operator namespace create --address "$address" --namespace "$namespace" --retention "$retention"
  echo "register-namespace: $namespace created; retention $retention"
fi

# A namespace is visible to the search attribute API a moment after it is created.
for name in $attributes; do
  tries=0
  until "$cli" operator search-attribute create --address "$address" --namespace "$namespace" --name "$name" --type Keyword >/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -ge 10 ]; then
      echo "register-namespace: registering $name failed" >&2
      exit 1
    fi
    sleep 2
  done
done
echo "register-namespace: search attributes $attributes"
