#!/bin/sh
# Apprentice edge launcher (issue 14). Installed by install-edge.sh to /opt/apprentice/launcher.sh and
# never replaced by an agent update (/opt is read-only to the daemon: ProtectSystem=strict).
#
#   launcher.sh check [--data-dir DIR]               ExecStartPre=: the start-time marker
#   launcher.sh run [--data-dir DIR] [--app-dir DIR] [--node PATH] [-- DAEMON-ARGS...]
#                                                    ExecStart=: exec node on the `current` version
#
# Layout (edge/agent/layout.ts writes the same): DIR/agent/current is a symlink to a version directory
# (a bare name under DIR/agent, or an absolute path such as /opt/apprentice), DIR/agent/marker holds
# key=value lines (edge/agent/marker.ts). `check` counts the starts of a pending version; once it has
# been started maxAttempts times without a commit, or its deadline has passed, it puts `current` back on
# the previous version (symlink under a temp name + rename) and records state=rolled_back, so the old
# version comes back and reports it. It never fails the start: a broken marker is logged and left.
set -u

MODE="${1:-}"
[ $# -gt 0 ] && shift
DATA_DIR=/var/lib/apprentice
APP_DIR=/opt/apprentice
NODE=/usr/bin/node

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) DATA_DIR="$2"; shift 2 ;;
    --app-dir) APP_DIR="$2"; shift 2 ;;
    --node) NODE="$2"; shift 2 ;;
    --) shift; break ;;
    -h | --help) usage; exit 0 ;;
    *) break ;;
  esac
done

AGENT="$DATA_DIR/agent"
MARKER="$AGENT/marker"
log() { printf 'apprentice-launcher: %s\n' "$*" >&2; }

# Reads the marker into m_<key> variables; returns 1 when absent or unreadable.
read_marker() {
  [ -f "$MARKER" ] || return 1
  m_v="" m_state="" m_pending="" m_previous="" m_previousVersion="" m_agentSeq="" m_attempts="" m_maxAttempts="" m_deadline="" m_reason="" m_reported=""
  while IFS='=' read -r key value; do
    case "$value" in *[!A-Za-z0-9._+/-]*) log "marker: invalid value for $key"; return 1 ;; esac
    case "$key" in
      v) m_v=$value ;; state) m_state=$value ;; pending) m_pending=$value ;; previous) m_previous=$value ;;
      previousVersion) m_previousVersion=$value ;; agentSeq) m_agentSeq=$value ;; attempts) m_attempts=$value ;;
      maxAttempts) m_maxAttempts=$value ;; deadline) m_deadline=$value ;; reason) m_reason=$value ;; reported) m_reported=$value ;;
      '') ;;
      *) log "marker: unknown key $key"; return 1 ;;
    esac
  done <"$MARKER"
  [ "$m_v" = 1 ] || { log "marker: format v=$m_v is not 1; left as is"; return 1; }
  for n in "$m_attempts" "$m_maxAttempts" "$m_deadline" "$m_agentSeq"; do
    case "$n" in '' | *[!0-9]*) log "marker: a number is missing or invalid"; return 1 ;; esac
  done
  [ -n "$m_previous" ] && [ -n "$m_pending" ] || { log "marker: pending or previous missing"; return 1; }
  return 0
}

write_marker() {
  tmp="$AGENT/.marker.launcher.$$.tmp"
  {
    printf 'v=1\nstate=%s\npending=%s\nprevious=%s\npreviousVersion=%s\nagentSeq=%s\nattempts=%s\nmaxAttempts=%s\ndeadline=%s\nreported=%s\n' \
      "$m_state" "$m_pending" "$m_previous" "$m_previousVersion" "$m_agentSeq" "$m_attempts" "$m_maxAttempts" "$m_deadline" "${m_reported:-0}"
    [ -z "$m_reason" ] || printf 'reason=%s\n' "$m_reason"
  } >"$tmp" && sync "$tmp" 2>/dev/null
  mv -f "$tmp" "$MARKER" && sync "$AGENT" 2>/dev/null
  return 0
}

# Atomic: a new symlink under a temp name renamed over `current` (mv -T: rename(2) onto the link itself).
switch_current() {
  tmp="$AGENT/.current.tmp.launcher.$$"
  rm -f "$tmp"
  ln -s "$1" "$tmp" && mv -Tf "$tmp" "$AGENT/current" && sync "$AGENT" 2>/dev/null
  return 0
}

check() {
  read_marker || return 0
  [ "$m_state" = pending ] || return 0
  now=$(date +%s)
  why=""
  if [ "$m_attempts" -ge "$m_maxAttempts" ]; then
    why=start_failed
  elif [ "$now" -gt "$m_deadline" ]; then
    why=health_timeout
  fi
  if [ -n "$why" ]; then
    log "version $m_pending not committed after $m_attempts start(s) ($why): rolling back to $m_previous"
    switch_current "$m_previous"
    m_state=rolled_back m_reason=$why m_reported=0
    write_marker
    return 0
  fi
  m_attempts=$((m_attempts + 1))
  write_marker
  log "starting pending version $m_pending (attempt $m_attempts of $m_maxAttempts)"
}

run() {
  target=$(readlink "$AGENT/current" 2>/dev/null || true)
  case "$target" in
    '') dir="$APP_DIR" ;;
    /*) dir="$target" ;;
    *) dir="$AGENT/$target" ;;
  esac
  entry="$dir/bin/apprentice-edge.js"
  if [ ! -f "$entry" ]; then
    [ -z "$target" ] || log "current -> $target has no bin/apprentice-edge.js; running the installed bundle $APP_DIR"
    dir="$APP_DIR"
    entry="$APP_DIR/bin/apprentice-edge.js"
  fi
  APPRENTICE_AGENT_ROOT="$AGENT" APPRENTICE_AGENT_DIR="$dir"
  export APPRENTICE_AGENT_ROOT APPRENTICE_AGENT_DIR
  cd "$dir" || exit 1
  exec "$NODE" "$entry" "$@"
}

case "$MODE" in
  check) mkdir -p "$AGENT" 2>/dev/null; check; exit 0 ;;
  run) run "$@" ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; log "error: expected check or run"; exit 2 ;;
esac
