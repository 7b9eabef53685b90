#!/bin/sh
# Prints an IAM policy of this folder with its {{PLACEHOLDERS}} filled from the environment:
#   AWS_REGION, AWS_ACCOUNT_ID, MARKCO_S3_BUCKET, MARKCO_DEPLOYMENT_ID (the same values as
#   /etc/markco/markco.env), and MARKCO_S3_KMS_KEY_UUID for the KMS policy.
#   AWS_ACCOUNT_ID=123456789012 AWS_REGION=ca-central-1 MARKCO_S3_BUCKET=... MARKCO_DEPLOYMENT_ID=prod \
#     infra/iam/render-policy.sh infra/iam/markco-worker-policy.json > /tmp/markco-worker-policy.json
# Fails naming any placeholder it has no value for.
set -eu
file=${1:?usage: render-policy.sh POLICY.json}
out=$(cat "$file")
for name in $(printf '%s' "$out" | grep -o '{{[A-Z0-9_]*}}' | sort -u | tr -d '{}'); do
  value=$(printenv "$name" || true)
  if [ -z "$value" ]; then
    echo "render-policy: $name is not set" >&2
    exit 1
  fi
  case "$value" in
    *[!A-Za-z0-9._-]*) echo "render-policy: $name has characters a policy value cannot take: $value" >&2; exit 1 ;;
  esac
  out=$(printf '%s' "$out" | sed "s/{{$name}}/$value/g")
done
printf '%s\n' "$out"
