#!/bin/sh
# Temporal's two PostgreSQL databases (the default store and the visibility store), created when missing
# and brought to the schema of the installed Temporal release with temporal-sql-tool. Idempotent: a second
# run finds both databases and applies no update (setup-schema -v 0.0 does not reset a stamped database;
# update-schema applies only the versions newer than the stored one). Used as is by the compose file's
# temporal-schema service (temporalio/admin-tools) and on a host without containers (docs/deploy.md).
#
# Environment (infra/temporal/temporal.env.example):
#   TEMPORAL_POSTGRES_HOST, TEMPORAL_POSTGRES_PORT, TEMPORAL_POSTGRES_USER, TEMPORAL_POSTGRES_PWD
#   TEMPORAL_DB (temporal), TEMPORAL_VISIBILITY_DB (temporal_visibility)
#   TEMPORAL_SCHEMA_DIR: the release's schema/postgresql/v12 (admin-tools: /etc/temporal/schema/postgresql/v12)
#   TEMPORAL_SQL_TOOL: the temporal-sql-tool binary (default: found on PATH)
set -eu

: "${TEMPORAL_POSTGRES_HOST:?TEMPORAL_POSTGRES_HOST is required}"
: "${TEMPORAL_POSTGRES_USER:?TEMPORAL_POSTGRES_USER is required}"
: "${TEMPORAL_POSTGRES_PWD:?TEMPORAL_POSTGRES_PWD is required}"
port=${TEMPORAL_POSTGRES_PORT:-5432}
default_db=${TEMPORAL_DB:-temporal}
visibility_db=${TEMPORAL_VISIBILITY_DB:-temporal_visibility}
schema_dir=${TEMPORAL_SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}
tool=${TEMPORAL_SQL_TOOL:-temporal-sql-tool}

for d in "$schema_dir/temporal/versioned" "$schema_dir/visibility/versioned"; do
  if [ ! -d "$d" ]; then
    echo "setup-postgres: $d is missing: set TEMPORAL_SCHEMA_DIR to the release's schema/postgresql/v12" >&2
    exit 1
  fi
done

# temporal-sql-tool reads the password from SQL_PASSWORD (the server reads it from its config).
export SQL_PASSWORD="$TEMPORAL_POSTGRES_PWD"

sql_tool() {
  db=$1
  shift
  "$tool" --plugin postgres12 --ep "$TEMPORAL_POSTGRES_HOST" -p "$port" -u "$TEMPORAL_POSTGRES_USER" --db "$db" "$@"
}

setup_database() {
  db=$1
  versioned=$2
  echo "setup-postgres: database $db"
  # create fails on an existing database; only that failure is expected on a second run.
  if ! out=$(sql_tool "$db" create 2>&1); then
    case "$out" in
      *"already exists"*) echo "setup-postgres: $db exists" ;;
      *) printf '%s\n' "$out" >&2; echo "setup-postgres: creating $db failed" >&2; exit 1 ;;
    esac
  fi
  sql_tool "$db" setup-schema -v 0.0
  sql_tool "$db" update-schema -d "$versioned"
}

setup_database "$default_db" "$schema_dir/temporal/versioned"
setup_database "$visibility_db" "$schema_dir/visibility/versioned"
echo "setup-postgres: $default_db and $visibility_db are at the release's schema"
