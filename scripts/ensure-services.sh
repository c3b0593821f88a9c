#!/usr/bin/env bash
# Starts the local PostgreSQL server the shared-store tests use, if it is down.
set -u
if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then
    exit 0
fi
if ls /etc/postgresql >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 50); do
        pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
        sleep 0.2
    done
fi
echo "warning: PostgreSQL is not reachable on 127.0.0.1:5432; its tests will fail" >&2
exit 0
