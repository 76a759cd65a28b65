#!/bin/bash
# jira-mailhost teardown: give the host its own mail configuration back, without losing mail.
#
# How it is run (pulumi-command remote.Command delete, no stdin):
#   MAILHOST_PUSH=STACK/HOST MAILHOST_DRAIN_SECONDS=N bash -c '<this file>' jira-mailhost-teardown
# The SSH user may be root or a user with passwordless sudo (we re-run ourselves with sudo -n).
#
# 1. Mail first: flush the queue and wait up to MAILHOST_DRAIN_SECONDS (else settings.env's
#    DRAIN_SECONDS, else 120) for it to empty.  Queued mail is never dropped: if any is left,
#    exit 1 and change nothing, so the Pulumi resource stays and the destroy can be re-run.
# 2. Then put back the files apply.sh saved before its first change (/var/lib/jira-mailhost/
#    original), bring postfix and opendkim back to how they were then (stopped if they were
#    not running), and remove /var/lib/jira-mailhost.
# 0. When the live config came from another push (settings.env PUSH is not MAILHOST_PUSH: the host was
#    renamed, and the new name's push ran before this old one's delete, which Pulumi runs last), the
#    host is that push's now: leave everything as it is.
# Exit codes: 0 removed (or nothing to remove, or left to another push); 1 mail still queued, or cannot become root;
#             3 an original file could not be restored (the state dir is kept).
{ # the whole script is one block: bash parses all of it before running any of it, so a script cut
  # off in transit runs nothing, and a TERM/INT trap never lands mid-parse (bash 5.2 then garbles both)
set -uo pipefail
umask 077

NAME=jira-mailhost
STATE=/var/lib/jira-mailhost
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH LC_ALL=C

say() { printf '%s: %s\n' "$NAME" "$*"; }
warn() { printf '%s: %s\n' "$NAME" "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
    warn "ERROR: user $(id -un) is not root and cannot run sudo without a password;"
    warn "log in as root (sshUser) or give $(id -un) passwordless sudo. Nothing was changed."
    exit 1
  fi
  drain=${MAILHOST_DRAIN_SECONDS:-} push=${MAILHOST_PUSH:-}
  if [ -n "${BASH_EXECUTION_STRING:-}" ]; then
    exec sudo -n -- env MAILHOST_DRAIN_SECONDS="$drain" MAILHOST_PUSH="$push" bash -c "$BASH_EXECUTION_STRING" "$0"
  fi
  exec sudo -n -- env MAILHOST_DRAIN_SECONDS="$drain" MAILHOST_PUSH="$push" bash "$0"
fi

# A dropped SSH session (SIGHUP, SIGPIPE) does not stop a teardown half-way: it runs to its end.
trap '' HUP PIPE
daemon() { # a daemon's start command with default HUP/PIPE handling (ours are ignored)
  if env --default-signal=HUP true 2>/dev/null; then env --default-signal=HUP,PIPE "$@"; else "$@"; fi
}

setting() { # KEY from settings.env, parsed, never sourced
  [ -r "$STATE/settings.env" ] || return 0
  awk -F= -v k="$1" '$1 == k { v = substr($0, length(k) + 2); gsub(/^"|"$/, "", v) } END { print v }' "$STATE/settings.env"
}

DRAIN=${MAILHOST_DRAIN_SECONDS:-}
[[ $DRAIN =~ ^[0-9]+$ ]] || DRAIN=$(setting DRAIN_SECONDS)
[[ $DRAIN =~ ^[0-9]+$ ]] || DRAIN=120
HOST=$(setting HOST_FQDN)
[ -n "$HOST" ] || HOST=$(postconf -h myhostname 2>/dev/null || hostname -f 2>/dev/null || hostname)

if [ -d "$STATE" ]; then
  exec 9>"$STATE/lock"
  flock -w 300 9 || { warn "ERROR: another jira-mailhost apply or teardown is still running on this host; nothing was changed."; exit 1; }
fi
OWNER=$(setting PUSH)
if [ -n "${MAILHOST_PUSH:-}" ] && [ -n "$OWNER" ] && [ "$OWNER" != "$MAILHOST_PUSH" ]; then
  [[ $OWNER =~ ^[A-Za-z0-9._-]{1,100}/[a-z0-9-]{1,63}$ ]] || OWNER="another push"  # a file on the host: checked
  say "the mail configuration on $HOST came from $OWNER since (a rename?), not $MAILHOST_PUSH: left as it is."
  exit 0
fi

have_systemd() { [ -d /run/systemd/system ]; }
conf_value() {
  [ -r "$1" ] || return 0
  awk -v k="$2" 'tolower($1) == tolower(k) { v = $2 } END { if (v != "") print v }' "$1"
}
odk_pidfile() { local p; p=$(conf_value /etc/opendkim.conf PidFile); printf '%s' "${p:-/run/opendkim/opendkim.pid}"; }
pid_alive() {
  local pid=$1 state
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)
  [ -n "$state" ] && [ "$state" != Z ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${2:-opendkim}" ]
}
postfix_installed() { command -v postqueue >/dev/null 2>&1 && command -v postfix >/dev/null 2>&1; }
postfix_running() {
  postfix_installed || return 1
  postfix status >/dev/null 2>&1  # the master itself: Debian's postfix.service stays "active" without it
}
opendkim_stop() { # pidfile
  if have_systemd; then systemctl stop opendkim 2>/dev/null; return 0; fi
  local pid _
  [ -r "$1" ] || return 0
  pid=$(tr -dc 0-9 <"$1")
  if pid_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do pid_alive "$pid" || break; sleep 0.1; done
    pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$1"
}
opendkim_start() {
  if have_systemd; then systemctl restart opendkim; return; fi
  local dir user
  dir=$(dirname "$(odk_pidfile)") user=$(conf_value /etc/opendkim.conf UserID)
  user=${user:-opendkim} user=${user%%:*}
  install -d -m 0750 -o "$user" -g "$(id -gn "$user" 2>/dev/null || echo root)" "$dir"
  daemon opendkim -x /etc/opendkim.conf -P "$(odk_pidfile)" 9>&-
}
postfix_do() { # start|stop|restart
  if have_systemd; then
    # Debian: postfix.service is a wrapper; the master runs in postfix@-.service.
    case $1 in
      stop) systemctl stop postfix postfix@- ;;
      *) systemctl "$1" postfix@- && systemctl start postfix ;;
    esac
    return
  fi
  [ "$1" = stop ] || { [ -x /usr/lib/postfix/configure-instance.sh ] && /usr/lib/postfix/configure-instance.sh - >/dev/null 2>&1; }
  case $1 in  # 9>&-: the daemons must not inherit our lock
    restart) postfix stop >/dev/null 2>&1; postfix_start 9>&- ;;
    start) postfix_start 9>&- ;;
    *) daemon postfix "$1" 9>&- ;;
  esac
}
postfix_start() { # as apply.sh: while our resolv.conf (outboundTls: dane) is live, Postfix alone sees it
  if [ -f /etc/jira-mailhost/resolv.conf ]; then
    daemon unshare --mount --propagation private -- \
      sh -c 'mount --bind /etc/jira-mailhost/resolv.conf /etc/resolv.conf && exec postfix start'
  else
    daemon postfix start
  fi
}

spool_count() { # queue files on disk: needs no running postfix
  local qdir
  qdir=$(postconf -h queue_directory 2>/dev/null || echo /var/spool/postfix)
  find "$qdir/maildrop" "$qdir/incoming" "$qdir/active" "$qdir/deferred" "$qdir/hold" -type f 2>/dev/null | wc -l
}

queue_count() { # messages in any queue, hold included; never 0 because a tool failed
  local listing
  if postfix_running && listing=$(postqueue -j 2>/dev/null); then
    printf '%s\n' "$listing" | grep -c '"queue_id"'
    return 0
  fi
  spool_count
}

refuse() { # count: the message a Jira admin sees in `pulumi destroy`
  warn "ERROR: $1 messages still queued on $HOST; they were not dropped: fix delivery (postqueue -p, /var/log/mail.log) and run the destroy again."
  if postfix_running; then
    warn "(waited ${DRAIN}s for the queue to drain; messages on hold must be released with postsuper -H or deleted deliberately with postsuper -d.)"
  else
    warn "(postfix is not running, so nothing can be delivered: start it with 'postfix start' or 'systemctl start postfix' first.)"
  fi
  warn "nothing was changed on $HOST."
  exit 1
}

# ---------- 1. never lose mail ----------
if postfix_installed; then
  waited=0
  if postfix_running; then
    postqueue -f >/dev/null 2>&1
    while :; do
      count=$(queue_count)
      [ "$count" -eq 0 ] && break
      [ "$waited" -ge "$DRAIN" ] && break
      sleep 1
      waited=$((waited + 1))
    done
  fi
  count=$(queue_count)
  [ "$count" -gt 0 ] && refuse "$count"
fi

# ---------- 2. restore the host's own configuration ----------
if [ ! -f "$STATE/original/PATHS" ]; then
  rm -rf "$STATE"
  say "nothing to restore on $HOST: jira-mailhost never changed its configuration."
  exit 0
fi
was() { awk -v s="$1" '$1 == s { print $2 }' "$STATE/original/SERVICES" 2>/dev/null; }
enabled() { awk -v s="$1" '$1 == s { print $3 }' "$STATE/original/SERVICES" 2>/dev/null; }
summary=()
# Stop accepting mail before taking the config away; mail that slipped in meanwhile keeps us here.
if postfix_installed && [ "$(was postfix)" != running ] && postfix_running; then
  postfix_do stop >/dev/null 2>&1
  count=$(spool_count)
  if [ "$count" -gt 0 ]; then postfix_do start >/dev/null 2>&1; refuse "$count"; fi
fi
ours_pidfile=$(odk_pidfile)
# The metrics collector's timer goes with our files (the unit files are among them, "absent" originally).
if have_systemd && [ -f /etc/systemd/system/jira-mailhost-metrics.timer ]; then
  systemctl disable --quiet --now jira-mailhost-metrics.timer >/dev/null 2>&1
fi
# ...and so does its last metrics file: left behind, the collector-stale alert would fire for ever.
textfile=$(setting METRICS_TEXTFILE)
case $textfile in /*.prom) rm -f -- "$textfile" ;; esac
failed=0
dirs=()
while read -r kind p; do
  case $kind in
    present) { cp -a "$STATE/original/tree$p" "$p.jm-new" && mv -f "$p.jm-new" "$p"; } || { warn "could not restore $p"; failed=1; } ;;
    absent) rm -f "$p" ;;
    dir) dirs=("$p" ${dirs[@]+"${dirs[@]}"}) ;;
  esac
done <"$STATE/original/PATHS"
if [ "$failed" = 1 ]; then
  warn "ERROR: some original files of $HOST could not be restored (above); the saved copies stay in $STATE/original."
  exit 3
fi
for d in ${dirs[@]+"${dirs[@]}"}; do rmdir "$d" 2>/dev/null; done
# Our unit drop-ins (the resolver's, for postfix@-) are gone: systemd must forget them before any restart.
if have_systemd; then systemctl daemon-reload >/dev/null 2>&1; fi
# The validating resolver (outboundTls: dane) goes back to how it was before the first apply that used it.
if [ "$(cat "$STATE/original/UNBOUND" 2>/dev/null)" = stopped ]; then
  if have_systemd; then systemctl disable --quiet --now unbound >/dev/null 2>&1
  elif [ -r /run/unbound.pid ]; then kill -TERM "$(tr -dc 0-9 </run/unbound.pid)" 2>/dev/null; fi
  summary+=("unbound stopped")
fi
# Likewise postfix-mta-sts-resolver (outboundTls: dane+mta-sts); its policy cache stays, as the package keeps it.
if [ "$(cat "$STATE/original/MTA_STS" 2>/dev/null)" = stopped ]; then
  if have_systemd; then systemctl disable --quiet --now postfix-mta-sts-resolver >/dev/null 2>&1
  elif [ -r /run/jira-mailhost-mta-sts.pid ]; then kill -TERM "$(tr -dc 0-9 </run/jira-mailhost-mta-sts.pid)" 2>/dev/null; fi
  rm -f /run/jira-mailhost-mta-sts.pid
  summary+=("postfix-mta-sts-resolver stopped")
fi

opendkim_stop "$ours_pidfile" >/dev/null 2>&1
if [ "$(was opendkim)" = running ]; then
  opendkim_start >/dev/null 2>&1 && summary+=("opendkim restarted with its own config") || summary+=("opendkim FAILED to restart with its own config")
else
  summary+=("opendkim stopped")
fi
if postfix_installed; then
  if [ "$(was postfix)" = running ]; then
    postfix_do restart >/dev/null 2>&1 && summary+=("postfix restarted with its own config") || summary+=("postfix FAILED to restart with its own config")
  else
    summary+=("postfix stopped")
  fi
fi
if have_systemd; then
  systemctl daemon-reload >/dev/null 2>&1
  for s in postfix opendkim; do
    case $(enabled $s) in disabled | masked) systemctl disable --quiet "$s" 2>/dev/null ;; esac
  done
fi
rm -rf "$STATE"
say "removed from $HOST: the original mail configuration is back; ${summary[*]/%/;} no mail was queued."
}
