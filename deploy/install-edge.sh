#!/usr/bin/env bash
# Installs (or removes) the Apprentice edge daemon on Raspberry Pi OS 64-bit (arm64) and Debian/Ubuntu
# (arm64, x86_64). Idempotent: rerunning upgrades the app and the unit, and never touches an existing
# config or the data dir. See --help.
set -euo pipefail

readonly UNIT_NAME=apprentice-edge.service
readonly SERVICE_USER=apprentice
readonly NODE_MIN_MAJOR=20
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR

PREFIX=""
SOURCE="$(cd "$SCRIPT_DIR/.." && pwd)"
CONFIG_FILE=""
UNINSTALL=0
PURGE=0
NO_START=0
NO_APT=0
SKIP_NPM=0
COPY_NODE_MODULES=0
CREATE_USER=0

usage() {
  cat <<'EOF'
Usage: install-edge.sh [options]

Installs the Apprentice edge daemon as its own lean package (issue 9): only the modules the edge entry
imports and only the packages they use, onnxruntime's binaries for this platform only:
  /opt/apprentice                    the app (package.json, .npmrc, bin/apprentice-edge.js, dist/{bin,edge,shared}, node_modules/)
                                     and launcher.sh, the fixed start script agent updates never replace
  /var/lib/apprentice/agent          later agent versions (over-the-air updates; see README)
  /etc/apprentice/edge.json          config, 0640 root:apprentice; written only if absent
  /var/lib/apprentice                data dir, 0750 apprentice:apprentice
  /etc/systemd/system/apprentice-edge.service, enabled and started
and, when Node.js >= 20 is missing, installs it from the distribution with apt.

Options:
  --prefix DIR         install into DIR as a staging root (like DESTDIR): no apt, no systemctl, no user
                       creation; paths inside the installed files stay /opt/apprentice, /etc/apprentice, ...
  --source DIR         app to install (default: the checkout this script is in); must be built (dist/)
  --config FILE        use FILE as edge.json when none exists yet (default: a template with CHANGE-ME
                       placeholders, and the service is then not started)
  --no-start           enable the service but do not (re)start it
  --no-apt             never run apt; fail if Node.js >= 20 is missing
  --skip-npm           do not install node_modules (tests, or when they are provided otherwise)
  --copy-node-modules  copy the edge dependencies (and theirs, per package-lock.json) out of
                       DIR/node_modules instead of running npm (offline; DIR built for this architecture)
  --create-user        with --prefix, still create the system user (needs root)
  --uninstall          stop and remove the service and the app; keep config and data
  --purge              with --uninstall, also remove /etc/apprentice and /var/lib/apprentice
  -h, --help           show this help
EOF
}

log() { printf 'install-edge: %s\n' "$*"; }
note() { printf 'install-edge: note: %s\n' "$*"; }
die() {
  printf 'install-edge: error: %s\n' "$*" >&2
  exit 1
}

need_arg() { [[ $# -ge 2 && -n "$2" ]] || { usage >&2; die "$1 needs a value"; }; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --prefix) need_arg "$@"; PREFIX="$2"; shift 2 ;;
    --source) need_arg "$@"; SOURCE="$2"; shift 2 ;;
    --config) need_arg "$@"; CONFIG_FILE="$2"; shift 2 ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    --no-start) NO_START=1; shift ;;
    --no-apt) NO_APT=1; shift ;;
    --skip-npm) SKIP_NPM=1; shift ;;
    --copy-node-modules) COPY_NODE_MODULES=1; shift ;;
    --create-user) CREATE_USER=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; printf 'install-edge: error: unknown option %s\n' "$1" >&2; exit 2 ;;
  esac
done

if [[ -n "$PREFIX" ]]; then
  mkdir -p "$PREFIX"
  PREFIX="$(cd "$PREFIX" && pwd)"
  [[ "$PREFIX" != "/" ]] || die "--prefix / is the live system: omit --prefix instead"
fi
[[ $PURGE -eq 0 || $UNINSTALL -eq 1 ]] || die "--purge only goes with --uninstall"

readonly APP_DIR="$PREFIX/opt/apprentice"
readonly CONF_DIR="$PREFIX/etc/apprentice"
readonly CONF_FILE="$CONF_DIR/edge.json"
readonly DATA_DIR="$PREFIX/var/lib/apprentice"
readonly UNIT_DIR="$PREFIX/etc/systemd/system"
IS_ROOT=0
[[ $EUID -eq 0 ]] && IS_ROOT=1
readonly IS_ROOT

if [[ -z "$PREFIX" && $IS_ROOT -eq 0 ]]; then
  die "installing into the live system needs root (sudo $0 ...), or use --prefix DIR"
fi

# systemctl only when installing into the live system of a host booted with systemd (not in a container).
systemd_usable() {
  [[ -z "$PREFIX" ]] && command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]
}

systemd_skip_reason() {
  if [[ -n "$PREFIX" ]]; then echo "--prefix is set"
  elif ! command -v systemctl >/dev/null 2>&1; then echo "systemctl is not installed"
  else echo "the system was not booted with systemd"; fi
}

group_exists() { getent group "$SERVICE_USER" >/dev/null 2>&1; }
user_exists() { getent passwd "$SERVICE_USER" >/dev/null 2>&1; }

# ---------------------------------------------------------------- uninstall
uninstall() {
  if systemd_usable; then
    log "stopping and disabling $UNIT_NAME"
    systemctl disable --now "$UNIT_NAME" 2>/dev/null || true
  else
    note "not running systemctl: $(systemd_skip_reason)"
  fi
  rm -f "$UNIT_DIR/$UNIT_NAME"
  systemd_usable && systemctl daemon-reload
  [[ "$APP_DIR" == */opt/apprentice ]] || die "refusing to remove unexpected path $APP_DIR"
  rm -rf "$APP_DIR" "$APP_DIR".old.* "$PREFIX"/opt/.apprentice.stage.*
  log "removed $APP_DIR and $UNIT_DIR/$UNIT_NAME"
  if [[ $PURGE -eq 1 ]]; then
    rm -rf "$CONF_DIR" "$DATA_DIR"
    log "purged $CONF_DIR and $DATA_DIR"
    if user_exists; then note "system user '$SERVICE_USER' kept (remove it with: userdel $SERVICE_USER)"; fi
  else
    log "kept $CONF_DIR and $DATA_DIR (add --purge to remove them)"
  fi
}

if [[ $UNINSTALL -eq 1 ]]; then
  uninstall
  exit 0
fi

# ---------------------------------------------------------------- checks
check_arch() {
  local arch
  arch="$(uname -m)"
  case "$arch" in
    aarch64 | arm64 | x86_64 | amd64) log "architecture $arch" ;;
    armv6l | armv7l) die "32-bit ARM ($arch) is not supported: onnxruntime-node ships Linux arm64 and x64 only; use Raspberry Pi OS 64-bit" ;;
    *) die "unsupported architecture $arch (need aarch64 or x86_64)" ;;
  esac
  if [[ -r /etc/os-release ]]; then
    local id like
    # shellcheck disable=SC1091
    id="$(. /etc/os-release && echo "${ID:-}")"
    # shellcheck disable=SC1091
    like="$(. /etc/os-release && echo "${ID_LIKE:-}")"
    case " $id $like " in
      *" debian "* | *" ubuntu "* | *" raspbian "*) ;;
      *) note "untested distribution '$id'; continuing" ;;
    esac
  fi
}

node_major() {
  command -v node >/dev/null 2>&1 || { echo 0; return; }
  node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0
}

ensure_node() {
  local major
  major="$(node_major)"
  if [[ $major -ge $NODE_MIN_MAJOR ]]; then
    log "using Node.js $(node --version) at $(command -v node)"
    return
  fi
  local found="missing"
  [[ $major -gt 0 ]] && found="$(node --version)"
  if [[ -n "$PREFIX" ]]; then
    note "--prefix: not installing Node.js (found: $found); the target needs Node.js >= $NODE_MIN_MAJOR at /usr/bin/node"
    return
  fi
  [[ $NO_APT -eq 0 ]] || die "Node.js >= $NODE_MIN_MAJOR is required (found: $found) and --no-apt was given"
  command -v apt-get >/dev/null 2>&1 || die "Node.js >= $NODE_MIN_MAJOR is required (found: $found) and apt-get is not available"
  log "Node.js >= $NODE_MIN_MAJOR required (found: $found): running apt-get update"
  apt-get update
  local candidate cand_major
  candidate="$(apt-cache policy nodejs | awk '/Candidate:/ { print $2 }')"
  cand_major="$(printf '%s' "$candidate" | sed -E 's/^[0-9]+://; s/[^0-9].*$//')"
  if [[ -z "$cand_major" || "$cand_major" -lt $NODE_MIN_MAJOR ]]; then
    die "the distribution offers nodejs '${candidate:-none}' (< $NODE_MIN_MAJOR). Install Node.js $NODE_MIN_MAJOR from NodeSource (https://github.com/nodesource/distributions) or a newer release, then rerun"
  fi
  log "installing nodejs $candidate from the distribution: apt-get install -y nodejs"
  DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs
  if ! command -v npm >/dev/null 2>&1 && [[ $SKIP_NPM -eq 0 && $COPY_NODE_MODULES -eq 0 ]]; then
    log "installing npm from the distribution: apt-get install -y npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y npm
  fi
  major="$(node_major)"
  [[ $major -ge $NODE_MIN_MAJOR ]] || die "Node.js is still older than $NODE_MIN_MAJOR after apt ($(node --version 2>/dev/null || echo missing))"
  log "installed Node.js $(node --version)"
}

check_source() {
  [[ -d "$SOURCE" ]] || die "source $SOURCE is not a directory"
  SOURCE="$(cd "$SOURCE" && pwd)"
  local f
  for f in package.json package-lock.json bin/apprentice-edge.js; do
    [[ -f "$SOURCE/$f" ]] || die "source $SOURCE has no $f"
  done
  [[ -f "$SOURCE/dist/bin/edge.js" ]] || die "source $SOURCE is not built (no dist/bin/edge.js): run \`npm ci && npm run build\` there first"
  if [[ $COPY_NODE_MODULES -eq 1 && ! -d "$SOURCE/node_modules" ]]; then
    die "--copy-node-modules: $SOURCE/node_modules does not exist"
  fi
  if [[ -n "$CONFIG_FILE" ]]; then
    [[ -f "$CONFIG_FILE" ]] || die "--config $CONFIG_FILE: no such file"
    if command -v node >/dev/null 2>&1; then
      node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$CONFIG_FILE" 2>/dev/null ||
        die "--config $CONFIG_FILE is not valid JSON"
    fi
  fi
}

# ---------------------------------------------------------------- install steps
STAGE=""
cleanup() { [[ -z "$STAGE" ]] || rm -rf "$STAGE"; }
trap cleanup EXIT

# onnxruntime-node's directory name for this machine's architecture.
ort_arch() {
  case "$(uname -m)" in
    aarch64 | arm64) echo arm64 ;;
    *) echo x64 ;;
  esac
}

# Removes from node_modules what no device runs (issue 9: 757 MB on an SD card before): every
# onnxruntime platform but this one (263 of its 288 MB), better-sqlite3's SQLite sources and build
# intermediates (the daemon loads build/Release/better_sqlite3.node alone), and what Node never loads:
# TypeScript sources and declarations, source maps, Markdown, @types packages.
prune_node_modules() {
  local nm="$1" arch d
  arch="$(ort_arch)"
  if [[ -d "$nm/onnxruntime-node/bin/napi-v6" ]]; then
    for d in "$nm"/onnxruntime-node/bin/napi-v6/*/*; do
      [[ "$d" == */linux/"$arch" ]] || rm -rf "$d"
    done
    find "$nm/onnxruntime-node/bin/napi-v6" -mindepth 1 -type d -empty -delete
  fi
  local sq="$nm/better-sqlite3"
  if [[ -f "$sq/build/Release/better_sqlite3.node" ]]; then
    rm -rf "$sq/deps" "$sq/src"
    find "$sq/build" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
    find "$sq/build/Release" -mindepth 1 -maxdepth 1 ! -name better_sqlite3.node -exec rm -rf {} +
  fi
  rm -rf "$nm/@types"
  find "$nm" -type f \( -name '*.ts' -o -name '*.mts' -o -name '*.cts' -o -name '*.map' -o -name '*.md' \) -delete
}

install_app() {
  command -v node >/dev/null 2>&1 || die "node is needed to stage the edge package (Node.js >= $NODE_MIN_MAJOR)"
  local packager="$SCRIPT_DIR/edge-package.mjs"
  [[ -f "$packager" ]] || packager="$SOURCE/deploy/edge-package.mjs"
  [[ -f "$packager" ]] || die "edge-package.mjs not found next to this script or in $SOURCE/deploy"
  mkdir -p "$PREFIX/opt"
  # Stage next to the target so the final switch is a rename on the same filesystem.
  STAGE="$(mktemp -d "$PREFIX/opt/.apprentice.stage.XXXXXX")"
  # The lean package: the files dist/bin/edge.js imports and a package.json naming only their packages.
  local copy=()
  [[ $COPY_NODE_MODULES -eq 1 ]] && copy=(--copy-node-modules) && log "copying the edge dependencies from $SOURCE/node_modules"
  node "$packager" --source "$SOURCE" --out "$STAGE" "${copy[@]}" >/dev/null
  # .npmrc carries onnxruntime-node-install=skip (no CUDA download on a Pi).
  [[ -f "$SOURCE/.npmrc" ]] && cp "$SOURCE/.npmrc" "$STAGE/"
  if [[ $COPY_NODE_MODULES -eq 0 && $SKIP_NPM -eq 1 ]]; then
    note "--skip-npm: node_modules not installed"
  elif [[ $COPY_NODE_MODULES -eq 0 ]]; then
    command -v npm >/dev/null 2>&1 || die "npm not found (needed for npm install --omit=dev)"
    # The checkout's lock pins every version; npm prunes it to the lean package's dependencies.
    cp "$SOURCE/package-lock.json" "$STAGE/"
    log "running npm install --omit=dev --omit=optional for $APP_DIR (this downloads dependencies)"
    (cd "$STAGE" && npm install --omit=dev --omit=optional --no-audit --no-fund)
  fi
  [[ -d "$STAGE/node_modules" ]] && prune_node_modules "$STAGE/node_modules"
  # The fixed launcher (issue 14): ExecStartPre/ExecStart go through it; agent updates never replace it.
  local launcher="$SCRIPT_DIR/apprentice-launcher.sh"
  [[ -f "$launcher" ]] || launcher="$SOURCE/deploy/apprentice-launcher.sh"
  [[ -f "$launcher" ]] || die "apprentice-launcher.sh not found next to this script or in $SOURCE/deploy"
  cp "$launcher" "$STAGE/launcher.sh"
  chmod -R u=rwX,go=rX "$STAGE"
  chmod 0755 "$STAGE"
  [[ $IS_ROOT -eq 1 ]] && chown -R root:root "$STAGE"
  local old=""
  if [[ -e "$APP_DIR" ]]; then
    old="$APP_DIR.old.$$"
    mv "$APP_DIR" "$old"
  fi
  mv "$STAGE" "$APP_DIR"
  STAGE=""
  [[ -z "$old" ]] || rm -rf "$old"
  log "installed the app to $APP_DIR ($(du -sm "$APP_DIR" | cut -f1) MB)"
}

ensure_user() {
  if [[ -n "$PREFIX" && $CREATE_USER -eq 0 ]]; then
    note "--prefix: not creating system user '$SERVICE_USER' (add --create-user, as root, to create it)"
    return
  fi
  [[ $IS_ROOT -eq 1 ]] || die "creating the system user needs root"
  if user_exists; then
    log "system user '$SERVICE_USER' exists"
    return
  fi
  log "creating system user '$SERVICE_USER'"
  useradd --system --user-group --home-dir /var/lib/apprentice --no-create-home \
    --shell /usr/sbin/nologin --comment "Apprentice edge daemon" "$SERVICE_USER"
}

# chown when we can; otherwise say why the ownership is left as it is.
# chown_if_possible OWNER PATH [NAME-TO-REPORT]
chown_if_possible() {
  local owner="$1" path="$2" name="${3:-$2}"
  if [[ $IS_ROOT -eq 1 ]] && getent group "${owner#*:}" >/dev/null 2>&1 && getent passwd "${owner%%:*}" >/dev/null 2>&1; then
    chown "$owner" "$path"
  else
    note "ownership of $name left as is (wanted $owner; not root, or '$SERVICE_USER' does not exist here)"
  fi
}

template_config() {
  # edge/config/schema.ts (version 1). The cloud's provisioning bundle (version, deviceId, mqtt.url,
  # username, password, trustedKeys) is a complete config; everything else has a default, and every
  # field can also come from an APPRENTICE_* variable (`apprentice edge --help` lists them).
  # The daemon refuses to start while any CHANGE-ME placeholder is left.
  cat <<'EOF'
{
  "version": 1,
  "deviceId": "CHANGE-ME-device-id",
  "dataDir": "/var/lib/apprentice",
  "mqtt": {
    "url": "mqtts://CHANGE-ME-broker.example.com:8883",
    "username": "CHANGE-ME-device-id",
    "password": "CHANGE-ME",
    "caFile": "/etc/apprentice/ca.crt"
  },
  "trustedKeys": [
    { "keyId": "CHANGE-ME", "publicKeyPem": "CHANGE-ME-ed25519-public-key-pem" }
  ],
  "api": { "bind": "127.0.0.1:8080" }
}
EOF
}

CONFIG_IS_TEMPLATE=0
write_config() {
  mkdir -p "$CONF_DIR"
  chmod 0750 "$CONF_DIR"
  chown_if_possible "root:$SERVICE_USER" "$CONF_DIR"
  if [[ -e "$CONF_FILE" ]]; then
    # An untouched template is not an edited config: --config may replace it.
    if [[ -n "$CONFIG_FILE" ]] && cmp -s "$CONF_FILE" <(template_config); then
      log "replacing the untouched template $CONF_FILE"
    else
      log "keeping existing $CONF_FILE (never overwritten)"
      [[ -z "$CONFIG_FILE" ]] || note "--config $CONFIG_FILE not applied because $CONF_FILE exists; merge it by hand"
      grep -q 'CHANGE-ME' "$CONF_FILE" && CONFIG_IS_TEMPLATE=1
      return 0
    fi
  fi
  local tmp="$CONF_FILE.tmp.$$"
  if [[ -n "$CONFIG_FILE" ]]; then
    cp "$CONFIG_FILE" "$tmp"
    log "wrote $CONF_FILE from $CONFIG_FILE"
  else
    template_config >"$tmp"
    CONFIG_IS_TEMPLATE=1
    log "wrote a template $CONF_FILE: replace the CHANGE-ME placeholders"
  fi
  chmod 0640 "$tmp"
  chown_if_possible "root:$SERVICE_USER" "$tmp" "$CONF_FILE"
  mv "$tmp" "$CONF_FILE"
}

make_data_dir() {
  mkdir -p "$DATA_DIR"
  chmod 0750 "$DATA_DIR"
  chown_if_possible "$SERVICE_USER:$SERVICE_USER" "$DATA_DIR"
  # Agent updates (issue 14) keep versions under $DATA_DIR/agent and run the one `current` names. The
  # app just installed to $APP_DIR is what the operator asked for: drop the link (and the marker of any
  # switch in progress) so the launcher runs $APP_DIR; it is also the rollback target of the next update.
  # Version directories stay until the next update prunes them; model slots, outbox and state are untouched.
  if [[ -L "$DATA_DIR/agent/current" ]]; then
    log "the agent ran $(readlink "$DATA_DIR/agent/current") from $DATA_DIR/agent; switching back to the installed $APP_DIR"
    rm -f "$DATA_DIR/agent/current" "$DATA_DIR/agent/marker"
  fi
}

install_unit() {
  local src="$SCRIPT_DIR/systemd/$UNIT_NAME"
  [[ -f "$src" ]] || src="$SOURCE/deploy/systemd/$UNIT_NAME"
  [[ -f "$src" ]] || die "unit file $UNIT_NAME not found next to this script or in $SOURCE/deploy/systemd"
  mkdir -p "$UNIT_DIR"
  local tmp="$UNIT_DIR/.$UNIT_NAME.tmp.$$"
  cp "$src" "$tmp"
  local node_bin
  node_bin="$(command -v node || true)"
  # The unit says /usr/bin/node (where apt puts it); follow a node installed elsewhere on this host.
  if [[ -z "$PREFIX" && -n "$node_bin" && "$node_bin" != /usr/bin/node ]]; then
    sed -i -e "s#^ExecStart=/usr/bin/node #ExecStart=$node_bin #" -e "s#--node /usr/bin/node #--node $node_bin #" "$tmp"
    note "ExecStart uses $node_bin"
  fi
  chmod 0644 "$tmp"
  if [[ -f "$UNIT_DIR/$UNIT_NAME" ]] && cmp -s "$tmp" "$UNIT_DIR/$UNIT_NAME"; then
    rm -f "$tmp"
    log "$UNIT_DIR/$UNIT_NAME unchanged"
  else
    mv "$tmp" "$UNIT_DIR/$UNIT_NAME"
    log "installed $UNIT_DIR/$UNIT_NAME"
  fi
}

start_service() {
  if ! systemd_usable; then
    note "not running systemctl: $(systemd_skip_reason); on the device run: systemctl daemon-reload && systemctl enable --now $UNIT_NAME"
    return
  fi
  systemctl daemon-reload
  local was_active=0
  systemctl is-active --quiet "$UNIT_NAME" && was_active=1
  if [[ $NO_START -eq 1 || $CONFIG_IS_TEMPLATE -eq 1 ]]; then
    systemctl enable "$UNIT_NAME"
    local why="--no-start"
    [[ $CONFIG_IS_TEMPLATE -eq 1 ]] && why="$CONF_FILE still has CHANGE-ME placeholders"
    note "enabled but not started ($why); then run: systemctl restart $UNIT_NAME"
    return
  fi
  systemctl enable --now "$UNIT_NAME"
  # enable --now leaves a running daemon on the old code: restart it onto the new one.
  [[ $was_active -eq 0 ]] || systemctl restart "$UNIT_NAME"
  log "$UNIT_NAME is $(systemctl is-active "$UNIT_NAME" || true)"
}

check_arch
check_source
ensure_node
ensure_user
install_app
write_config
make_data_dir
install_unit
start_service
log "done"
