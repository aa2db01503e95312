#!/usr/bin/env bash
# Make sure the PostgreSQL and MariaDB servers the tests use are up; start them if we can.
# A server that stays down fails here, loudly: the suite never skips a missing database.
set -u
PGHOST=${SLUICE_TEST_PG_HOST:-127.0.0.1}; PGPORT=${SLUICE_TEST_PG_PORT:-5432}
MYHOST=${SLUICE_TEST_MYSQL_HOST:-127.0.0.1}; MYPORT=${SLUICE_TEST_MYSQL_PORT:-3306}

up() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
wait_up() {
  for _ in $(seq 1 60); do up "$1" "$2" && return 0; sleep 0.5; done
  return 1
}

if ! up "$PGHOST" "$PGPORT"; then
  echo "PostgreSQL is down on $PGHOST:$PGPORT; starting it" >&2
  if [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  wait_up "$PGHOST" "$PGPORT" || { echo "PostgreSQL did not come up on $PGHOST:$PGPORT" >&2; exit 1; }
fi

if ! up "$MYHOST" "$MYPORT"; then
  echo "MariaDB is down on $MYHOST:$MYPORT; starting it" >&2
  if [ -x /usr/sbin/mariadbd ]; then
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  fi
  wait_up "$MYHOST" "$MYPORT" || { echo "MariaDB did not come up on $MYHOST:$MYPORT" >&2; exit 1; }
fi
echo "PostgreSQL ($PGHOST:$PGPORT) and MariaDB ($MYHOST:$MYPORT) are up"
