#!/usr/bin/env bash
# Creates the read-only PostgreSQL role that `hpsearch dashboard` connects as.
#
# The postgres image runs this once, on the first start of an empty volume
# (mounted into /docker-entrypoint-initdb.d by docker-compose.yml). For a volume
# created before this script existed, run it once by hand:
#   docker compose exec postgres bash /docker-entrypoint-initdb.d/10-readonly-role.sh
# It is idempotent: a second run only resets the password and the grants.
#
# Reads POSTGRES_USER (the owner: the runner creates Optuna's tables as this role,
# after this script ran), POSTGRES_DB, POSTGRES_READONLY_USER and
# POSTGRES_READONLY_PASSWORD (from .env). psql connects as usual (PGHOST/PGPORT,
# or the image's local socket). Values reach SQL only as psql variables, quoted
# by psql (:"name" for identifiers, :'value' for literals), never spliced in.
set -euo pipefail

: "${POSTGRES_USER:?POSTGRES_USER is not set}"
: "${POSTGRES_DB:?POSTGRES_DB is not set}"
: "${POSTGRES_READONLY_USER:?set POSTGRES_READONLY_USER in .env (see .env.example)}"
: "${POSTGRES_READONLY_PASSWORD:?set POSTGRES_READONLY_PASSWORD in .env (see .env.example)}"
if [ "$POSTGRES_READONLY_USER" = "$POSTGRES_USER" ]; then
  echo "10-readonly-role.sh: POSTGRES_READONLY_USER must differ from POSTGRES_USER (the owner)" >&2
  exit 1
fi

psql -v ON_ERROR_STOP=1 -X -q \
  --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" \
  -v ro_user="$POSTGRES_READONLY_USER" -v ro_password="$POSTGRES_READONLY_PASSWORD" <<'EOSQL'
SELECT format('CREATE ROLE %I', :'ro_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'ro_user') \gexec
-- A login that can own nothing and create nothing; its sessions start read-only
-- (a fourth layer: the grants below are what actually stops writes).
ALTER ROLE :"ro_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'ro_password';
ALTER ROLE :"ro_user" SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE :"db" TO :"ro_user";
GRANT USAGE ON SCHEMA public TO :"ro_user";
-- Tables that exist now (a re-run on an old volume) ...
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"ro_user";
-- ... and those the owner creates later (the runner creates Optuna's schema on first use).
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"ro_user";
EOSQL
echo "10-readonly-role.sh: role $POSTGRES_READONLY_USER can read database $POSTGRES_DB" >&2
