#!/usr/bin/env bash
# Installs TestArena as systemd services on this host; safe to run again (upgrades included).
#
#   deploy/install.sh [BINARY]            as root; BINARY defaults to target/release/testarena
#   ROOT=/tmp/stage deploy/install.sh     stage everything under /tmp/stage instead (no root
#                                         needed; no user, no chown, no systemctl)
#
# What it does:
#   - creates the system user and group `testarena` (home /var/lib/testarena, no login shell)
#   - creates /etc/testarena with config.toml (from deploy/config.example.toml) and env, only
#     if they are missing: an existing config.toml or env is never touched
#   - installs the binary to /usr/local/bin/testarena (atomically: a running one keeps running)
#   - installs testarena-app.service, testarena-worker.service and testarena-worker@.service
#     to /etc/systemd/system (overwritten: put local changes in drop-ins, `systemctl edit`)
#   - creates /var/lib/testarena (systemd would too: StateDirectory=testarena)
#   - runs `systemctl daemon-reload` if systemd is running
# It neither enables nor starts nor restarts anything; it prints what to run.
set -euo pipefail

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
}

ROOT="${ROOT:-${DESTDIR:-}}"
BIN=""
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --root=*) ROOT="${1#--root=}"; shift ;;
        -*) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *)
            if [ -n "$BIN" ]; then echo "install.sh: one binary path only (see --help)" >&2; exit 2; fi
            BIN="$1"; shift ;;
    esac
done
# ROOT=/ is a real installation.
ROOT="${ROOT%/}"

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BIN="${BIN:-$REPO/target/release/testarena}"

USER_NAME=testarena
STATE_DIR=/var/lib/testarena
CONF_DIR=/etc/testarena
UNIT_DIR=/etc/systemd/system
BIN_PATH=/usr/local/bin/testarena
DOC_DIR=/usr/local/share/doc/testarena
UNITS=(testarena-app.service testarena-worker.service testarena-worker@.service)

[ -f "$BIN" ] && [ -x "$BIN" ] || die "no executable at $BIN: build it (cargo build --release --locked) or pass its path"
for f in "$HERE/config.example.toml" "$HERE/nginx/testarena.conf" "${UNITS[@]/#/$HERE/systemd/}"; do
    [ -f "$f" ] || die "missing $f: run this script from a TestArena checkout"
done

staged=0
if [ -n "$ROOT" ]; then
    staged=1
    mkdir -p "$ROOT"
    ROOT="$(cd "$ROOT" && pwd)"
    say "staging under $ROOT (no user, no ownership changes, no systemctl)"
elif [ "$(id -u)" -ne 0 ]; then
    die "run as root (or set ROOT=DIR to stage the files under DIR)"
fi

# --- User -----------------------------------------------------------------------------------
if [ "$staged" -eq 0 ]; then
    if ! getent group "$USER_NAME" >/dev/null; then
        groupadd --system "$USER_NAME"
        say "created group $USER_NAME"
    fi
    if ! getent passwd "$USER_NAME" >/dev/null; then
        nologin="$(command -v nologin || echo /usr/sbin/nologin)"
        useradd --system --gid "$USER_NAME" --home-dir "$STATE_DIR" --no-create-home \
            --shell "$nologin" --comment "TestArena" "$USER_NAME"
        say "created user $USER_NAME"
    fi
fi

# Ownership and mode of what we create; ownership only on a real installation.
own() { # own MODE OWNER:GROUP PATH
    chmod "$1" "$3"
    if [ "$staged" -eq 0 ]; then chown "$2" "$3"; fi
}

# --- Directories ----------------------------------------------------------------------------
for d in "$CONF_DIR" "$UNIT_DIR" "${BIN_PATH%/*}" "$DOC_DIR" "$STATE_DIR"; do
    mkdir -p "$ROOT$d"
done
own 0755 root:root "$ROOT$CONF_DIR"
own 0750 "$USER_NAME:$USER_NAME" "$ROOT$STATE_DIR"

# --- Configuration: created once, never overwritten -------------------------------------------
# Readable by the service user only (it may hold tokens).
conf="$ROOT$CONF_DIR/config.toml"
if [ -e "$conf" ]; then
    say "keeping $CONF_DIR/config.toml"
else
    cp "$HERE/config.example.toml" "$conf.tmp"
    own 0640 "root:$USER_NAME" "$conf.tmp"
    mv "$conf.tmp" "$conf"
    say "created $CONF_DIR/config.toml from deploy/config.example.toml: review it"
fi
# The example itself is refreshed, so an upgrade shows the keys a new version knows.
cp "$HERE/config.example.toml" "$ROOT$CONF_DIR/config.example.toml"
chmod 0644 "$ROOT$CONF_DIR/config.example.toml"

envf="$ROOT$CONF_DIR/env"
if [ -e "$envf" ]; then
    say "keeping $CONF_DIR/env"
else
    cat >"$envf.tmp" <<'ENV'
# Environment of the TestArena units (EnvironmentFile=-/etc/testarena/env), KEY=VALUE lines.
# TESTARENA_* variables beat config.toml; the units' --config flag beats TESTARENA_CONFIG.
# After a change: systemctl restart testarena-app testarena-worker
#
# Log level and filter (tracing syntax):
#TESTARENA_LOG=info,sqlx=warn
#
# Tools the worker runs (git, the build, QEMU) are looked up in PATH; add a toolchain that
# lives elsewhere, e.g. ESP-IDF under /opt/esp:
#PATH=/opt/esp/tools/bin:/usr/local/bin:/usr/bin:/bin
#IDF_PATH=/opt/esp/esp-idf
ENV
    own 0640 "root:$USER_NAME" "$envf.tmp"
    mv "$envf.tmp" "$envf"
    say "created $CONF_DIR/env"
fi

# --- Binary: replaced atomically, so a running service keeps its (old) file -----------------
dest="$ROOT$BIN_PATH"
if [ -e "$dest" ] && cmp -s "$BIN" "$dest"; then
    say "$BIN_PATH is up to date"
else
    cp "$BIN" "$dest.new"
    chmod 0755 "$dest.new"
    mv -f "$dest.new" "$dest"
    say "installed $BIN_PATH from $BIN"
fi

# --- Units and documentation ------------------------------------------------------------------
for u in "${UNITS[@]}"; do
    install -m 0644 "$HERE/systemd/$u" "$ROOT$UNIT_DIR/$u"
done
say "installed ${UNITS[*]} to $UNIT_DIR"
install -m 0644 "$HERE/nginx/testarena.conf" "$ROOT$DOC_DIR/nginx-testarena.conf"
install -m 0644 "$HERE/config.example.toml" "$ROOT$DOC_DIR/config.example.toml"
if [ -f "$REPO/docs/deployment.md" ]; then
    install -m 0644 "$REPO/docs/deployment.md" "$ROOT$DOC_DIR/deployment.md"
fi

if [ "$staged" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "systemctl daemon-reload done"
    active=()
    for u in testarena-app testarena-worker; do
        if systemctl is-active --quiet "$u"; then active+=("$u"); fi
    done
    if systemctl is-active --quiet 'testarena-worker@*' 2>/dev/null; then active+=('testarena-worker@*'); fi
else
    say "systemd is not running here (or ROOT is set): no daemon-reload"
    active=()
fi

cat <<NEXT

Next steps:
  1. Review $CONF_DIR/config.toml (listen, data_dir, concurrency, ...) and $CONF_DIR/env.
  2. Start the server and a worker, now and at every boot:
       systemctl enable --now testarena-app testarena-worker
     or several workers instead of one:
       systemctl enable --now testarena-app testarena-worker@1 testarena-worker@2
  3. Make API tokens (the config asks for them: [auth] mode = "required"), e.g.
       sudo -u testarena testarena token create --config $CONF_DIR/config.toml --name admin --scope admin
  4. Put nginx in front (HTTPS, compression, live streams):
       cp $DOC_DIR/nginx-testarena.conf /etc/nginx/sites-available/testarena
       ln -s ../sites-available/testarena /etc/nginx/sites-enabled/testarena
       nginx -t && systemctl reload nginx
  5. Logs: journalctl -u testarena-app -u testarena-worker -f
  See $DOC_DIR/deployment.md.
NEXT
if [ "${#active[@]}" -gt 0 ]; then
    printf '\nRunning now, still on the old binary: systemctl restart %s\n' "${active[*]}"
fi
