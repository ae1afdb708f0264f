#!/usr/bin/env bash
# The README's test command. On a fresh machine it first installs what the tests drive the
# gateway with, then runs `swift test` (arguments are passed on, e.g. ./test.sh --filter Gateway):
#   - PostgreSQL's server binaries, psql and pgbench        (Debian: postgresql, postgresql-client)
#   - the PostgreSQL JDBC driver for the JDBC client test    (Debian: libpostgresql-jdbc-java)
#   - headless Chromium and its driver for the browser tests  (Debian: chromium, chromium-driver)
#   - the Python clients in Tests/requirements.txt           (PyPI, into .build/test-venv)
# Debian packages are installed only when running as root with apt-get; otherwise the script
# stops and names the command that installs them. Nothing goes into the system Python.
# Opt-outs: ROLEGATE_SKIP_JDBC=1 skips the JDBC test (and the driver install).
set -euo pipefail
cd "$(dirname "$0")"

say() { echo "test.sh: $*" >&2; }

apt_updated=0
apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        say "missing: $1. Install it with: sudo apt-get install -y $2"
        exit 1
    fi
    if [ "$apt_updated" = 0 ]; then
        say "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    say "installing $2 ($1)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $2 >/dev/null
}

server_binaries() {
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

server_binaries || apt_install "PostgreSQL server binaries (initdb, pg_ctl)" postgresql
command -v psql >/dev/null 2>&1 || apt_install "psql" postgresql-client
command -v pgbench >/dev/null 2>&1 || apt_install "pgbench" postgresql-contrib
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    # PostgreSQL refuses to run as root: the tests run the server as 'postgres'.
    apt_install "the 'postgres' user (the server cannot run as root)" postgresql
fi

# What a person sees is tested in a real browser (people's logins through their provider).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    apt_install "chromium and chromedriver (for the browser tests)" "chromium chromium-driver"
fi

if [ "${ROLEGATE_SKIP_JDBC:-}" != 1 ]; then
    command -v java >/dev/null 2>&1 || apt_install "java (for the JDBC client test)" default-jre-headless
    [ -f /usr/share/java/postgresql.jar ] ||
        apt_install "/usr/share/java/postgresql.jar (the JDBC driver)" libpostgresql-jdbc-java
fi

# The Python test clients, in a venv of their own, reinstalled when the pins change.
venv=.build/test-venv
stamp="$venv/requirements.sha256"
wanted=$(sha256sum Tests/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    say "setting up the Python test clients in $venv (Tests/requirements.txt)"
    mkdir -p .build
    python3 -m venv "$venv" || {
        say "cannot create a venv: install it with: sudo apt-get install -y python3-venv"
        exit 1
    }
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r Tests/requirements.txt
    echo "$wanted" >"$stamp"
fi
export ROLEGATE_TEST_PYTHON="$PWD/$venv/bin/python"

status=0
swift test "$@" || status=$?
if [ "${ROLEGATE_SKIP_JDBC:-}" = 1 ]; then
    say "skipped on request: the JDBC client test (ROLEGATE_SKIP_JDBC=1)"
fi
exit "$status"
