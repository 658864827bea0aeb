# Services the tests use: a throwaway PostgreSQL on 127.0.0.1, docker-compose (v1, to
# validate docker-compose.yml without an engine) and Debian's chromium + chromium-driver
# (browser tests). Source it, don't run it:
#
#   source .ci/services.sh      # .ci/test does this before pytest
#
# As root it installs what is missing from Debian (postgresql, docker-compose, chromium,
# chromium-driver). It then
# starts a private cluster under /tmp/hps-pg-XXXXXX (initdb as user postgres, trust on the
# loopback except for role hps_secret, which must give its scram-sha-256 password), on a
# free port, creates database hpsearch_test, and exports:
#
#   HPSEARCH_TEST_PG_URL   postgresql+psycopg://postgres@127.0.0.1:PORT/hpsearch_test
#   HPSEARCH_TEST_PG_DATA  the data directory (tests run `pg_ctl restart` on it)
#   HPSEARCH_TEST_PG_BIN   the folder holding initdb, pg_ctl, psql
#
# The cluster is stopped and deleted by an EXIT trap. Set HPSEARCH_SKIP_SERVICES=1 to skip
# all of this (Postgres tests then skip, or fail under CI=true).

_hps_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

_hps_services_install() {
  local need=()
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
  command -v docker-compose >/dev/null || need+=(docker-compose)
  # Browser tests (marker `browser`): Debian's Chromium and its driver, never a downloaded browser.
  [ -x /usr/bin/chromium ] || need+=(chromium)
  [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
  [ "${#need[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "services: ${need[*]} missing and not root with apt-get; install them to run those tests" >&2
    return 0
  fi
  # Debian's postinst would create and start a cluster on :5432; we only want our own.
  mkdir -p /etc/postgresql-common
  grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf \
    || echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf
  echo "services: apt-get install ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || echo "services: apt-get install ${need[*]} failed" >&2
}

_hps_pg_stop() {
  if [ -n "${HPSEARCH_TEST_PG_DATA:-}" ] && [ -d "$HPSEARCH_TEST_PG_DATA" ]; then
    _hps_as_owner "$HPSEARCH_TEST_PG_BIN/pg_ctl" -D "$HPSEARCH_TEST_PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$(dirname "$HPSEARCH_TEST_PG_DATA")"
  fi
}

_hps_pg_start() {
  local bin dir port
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -x "$bin/initdb" ] || { echo "services: no PostgreSQL binaries; Postgres tests will skip" >&2; return 0; }
  dir=$(mktemp -d /tmp/hps-pg-XXXXXX)
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  if ! _hps_as_owner "$bin/initdb" -U postgres --auth=trust -D "$dir/data" >"$dir/initdb.log" 2>&1; then
    echo "services: initdb failed:" >&2; tail -n 5 "$dir/initdb.log" >&2; rm -rf "$dir"; return 0
  fi
  # First match wins: role hps_secret must authenticate with its password over TCP.
  _hps_as_owner sed -i '1i host all hps_secret 127.0.0.1/32 scram-sha-256' "$dir/data/pg_hba.conf"
  if ! _hps_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir/data" start >/dev/null; then
    echo "services: pg_ctl start failed:" >&2; tail -n 5 "$dir/data/server.log" >&2; rm -rf "$dir"; return 0
  fi
  export HPSEARCH_TEST_PG_DATA="$dir/data" HPSEARCH_TEST_PG_BIN="$bin"
  trap _hps_pg_stop EXIT
  "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres hpsearch_test
  export HPSEARCH_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:$port/hpsearch_test"
  echo "services: PostgreSQL on 127.0.0.1:$port ($dir)" >&2
}

if [ "${HPSEARCH_SKIP_SERVICES:-0}" != 1 ]; then
  _hps_services_install
  _hps_pg_start
fi
