#!/bin/bash
# jira-mailhost apply: install the Postfix + OpenDKIM config bundle read from stdin, safely.
#
# How it is run (pulumi-command remote.Command create/update, no environment variables):
#   bash -c '<this file>' jira-mailhost-apply  < bundle
# The SSH user may be root or a user with passwordless sudo (we re-run ourselves with sudo -n).
#
# Input contract
#   stdin    base64 of a gzipped tar (mailhost/publish/bundle.py pack): MANIFEST and files/<absolute path>.
#            MANIFEST: one line per file "<path> <mode, octal> <owner> <group> <postmap 0|1> <sha256>".
#   settings the bundle must contain /var/lib/jira-mailhost/settings.env, KEY=VALUE lines (a value
#            may be in double quotes; nothing is expanded or executed):
#              PACKAGES="postfix opendkim ..."  Debian packages installed when missing
#              SERVICES="postfix opendkim"      services this config drives (others are left alone)
#              DRAIN_SECONDS=120                teardown.sh's default wait for the queue to drain
#              HOST_FQDN, STACK, PRODUCTION     only used in messages
#              MAIN_CF_PARAMETERS="a b ..."     exactly the parameters `postconf -n` must show
#              REROUTE_TO, REROUTE_MAP          staging: every recipient must become REROUTE_TO
#              RELAY_KEY=[host]:port            relay: the one sasl_passwd entry
#              TLS_POLICY_MAP, TLS_POLICY="d=l ..."  direct: each domain's TLS level in the policy table
#              RESOLVER=unbound, DNSSEC_BOGUS_NAME   direct with DANE: Postfix alone resolves through
#                       unbound on loopback (the bundle's /etc/jira-mailhost/resolv.conf bound over
#                       /etc/resolv.conf for Postfix only), checked to validate before the switch
#              TLS_POLICY_MAPS="t1, t2"         smtp_tls_policy_maps exactly
#              MTA_STS=1, DANE_FIRST, DANE_FIRST_PORT  dane+mta-sts: postfix-mta-sts-resolver started and
#                       checked to answer; the DANE-first map (DANE_FIRST, run from the stage) must hold
#                       mail for DNSSEC_BOGUS_NAME (TEMP) before the switch
#            Unknown keys are ignored.
# Exit codes (the message on stderr says what failed and what is live now)
#   0  applied, or unchanged
#   1  rejected before anything changed (bad bundle, validation failed, cannot install or
#      cannot become root): the host still runs its previous configuration
#   2  failed after switching; the previous configuration was restored and is running again
#   3  the host needs an admin: the restore failed too, or an unchanged config does not serve
# State, root-only (0700): /var/lib/jira-mailhost
#   original/  the host's own files before the first apply (restored by teardown.sh)
#   backup/    the files live before the latest switch    managed  paths of the latest apply
#   journal    present from just before a switch until it is confirmed or rolled back: a run that
#              finds it (the earlier one was killed mid-switch) first puts backup/ back
# A dropped SSH session (SIGHUP, SIGPIPE on stdout/stderr) does not stop a run: it completes or
# rolls back; daemons it starts get the default signal handling back.  SIGTERM or SIGINT stops it on
# one whole configuration: before the switch nothing changed (exit 1); during it, the files live
# before are put back from the journal's backup (exit 2); after it is confirmed, the run finishes.
# The signal is taken by a Perl supervisor that only waits, and acted on by the worker (the rest of this
# script, which ignores TERM and INT) at its stop points: see "supervisor" below for why.
# File contents are never printed; there is no `set -x`.
{ # the whole script is one block: bash parses all of it before running any of it, so a script cut
  # off in transit runs nothing, and a TERM/INT trap never lands mid-parse (bash 5.2 then garbles both)
set -uo pipefail
umask 077
cd / || exit 1  # coreutils 9.1: `cp -a --parents /abs/path DIR` fails unless the cwd is /

NAME=jira-mailhost
STATE=/var/lib/jira-mailhost
SETTINGS=$STATE/settings.env
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH LC_ALL=C

say() { printf '%s: %s\n' "$NAME" "$*"; }
warn() { printf '%s: %s\n' "$NAME" "$*" >&2; }
reject() {
  warn "ERROR: $*"
  warn "nothing was changed in the mail configuration of $(host_label); the previous configuration is still live."
  exit 1
}

if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
    warn "ERROR: user $(id -un) is not root and cannot run sudo without a password;"
    warn "log in as root (sshUser) or give $(id -un) passwordless sudo. Nothing was changed."
    exit 1
  fi
  if [ -n "${BASH_EXECUTION_STRING:-}" ]; then
    exec sudo -n -- bash -c "$BASH_EXECUTION_STRING" "$0"
  fi
  exec sudo -n -- bash "$0"
fi

# From here on the run finishes what it starts, whatever happens to the SSH session that started it.
trap '' HUP PIPE
daemon() { # run a daemon's start command with default signal handling (the worker ignores HUP PIPE TERM INT)
  if env --default-signal=HUP true 2>/dev/null; then env --default-signal=HUP,PIPE,TERM,INT "$@"; else "$@"; fi
}

# ---------- supervisor: takes TERM and INT, so that the worker never has to trap them ----------
# bash 5.2 is not safe with signal traps: it runs a pending trap even while it parses a $(...) it is
# expanding, garbling both (a drill saw exit 0 mid-switch), and a storm of TERMs to a bash that traps
# them and waits made it crash (SIGSEGV: the SSH session ended 255 after a finished run).  So the worker,
# the rest of this script, starts with TERM and INT ignored and traps no signal; a small Perl supervisor
# (perl-base is Essential on Debian) waits for it, writes a TERM or INT it gets to a file the worker
# reads at its stop points (stop_point below), and exits with the worker's status.
SUPERVISOR='
use strict; use warnings;
my $stop = $ENV{JM_STOP_FILE};
my $mark = sub { my $name = shift; if (open(my $f, ">", $stop)) { print $f $name; close $f; } };
$SIG{TERM} = sub { $mark->("TERM") };
$SIG{INT} = sub { $mark->("INT") };
my $pid = fork();
if (!defined $pid) { print STDERR "jira-mailhost: ERROR: cannot start the apply: $!; nothing was changed.\n"; exit 1; }
if ($pid == 0) { $SIG{TERM} = "IGNORE"; $SIG{INT} = "IGNORE"; exec { "bash" } "bash", @ARGV; exit 127; }
my $status;
while (1) {
  my $done = waitpid($pid, 0);
  if ($done == $pid) { $status = $?; last; }
  next if $done == -1 && $!{EINTR};
  print STDERR "jira-mailhost: ERROR: lost the apply process: $!\n"; exit 3;
}
$SIG{TERM} = "IGNORE"; $SIG{INT} = "IGNORE";
unlink $stop; (my $dir = $stop) =~ s{/[^/]*$}{}; rmdir $dir;
exit(($status & 127) ? 128 + ($status & 127) : $status >> 8);
'
if [ -z "${JM_STOP_FILE:-}" ]; then
  if [ -n "${BASH_EXECUTION_STRING:-}" ]; then set -- -c "$BASH_EXECUTION_STRING" "$0"; else set -- "$0"; fi
  if command -v perl >/dev/null 2>&1; then
    # In /run (a tmpfs): what a killed run leaves there is gone at the next boot.
    stop_dir=$(mktemp -d /run/jira-mailhost-stop.XXXXXX 2>/dev/null || mktemp -d -t jira-mailhost-stop.XXXXXX) ||
      { warn "ERROR: cannot create a temporary directory; nothing was changed."; exit 1; }
    JM_STOP_FILE=$stop_dir/signal exec perl -e "$SUPERVISOR" -- "$@"
  fi
  # No perl (not Debian): no supervisor; a TERM stops the run at once, and the next run's journal replay
  # puts back a switch it cut off.
  JM_STOP_FILE=/dev/null exec bash "$@"
fi

S_PACKAGES="" S_SERVICES="postfix opendkim" S_FQDN="" S_STACK="" S_PRODUCTION=0
S_PARAMETERS="" S_REROUTE_TO="" S_REROUTE_MAP="" S_RELAY_KEY="" S_TLS_POLICY_MAP="" S_TLS_POLICY=""
S_RESOLVER="" S_DNSSEC_BOGUS="" S_TLS_POLICY_MAPS="" S_MTA_STS="" S_DANE_FIRST="" S_DANE_FIRST_PORT=""
# The resolv.conf Postfix alone sees with RESOLVER=unbound (mailhost/publish/render.py RESOLV_CONF).
PF_RESOLV=/etc/jira-mailhost/resolv.conf
host_label() { printf '%s' "${S_FQDN:-$(hostname -f 2>/dev/null || hostname)}"; }

read_settings() { # file: KEY=VALUE lines, parsed, never sourced
  local line key value
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in '' | '#'*) continue ;; esac
    key=${line%%=*} value=${line#*=}
    value=${value#\"} value=${value%\"}
    case $key in
      PACKAGES) S_PACKAGES=$value ;;
      SERVICES) S_SERVICES=$value ;;
      HOST_FQDN) S_FQDN=$value ;;
      STACK) S_STACK=$value ;;
      PRODUCTION) S_PRODUCTION=$value ;;
      MAIN_CF_PARAMETERS) S_PARAMETERS=$value ;;
      REROUTE_TO) S_REROUTE_TO=$value ;;
      REROUTE_MAP) S_REROUTE_MAP=$value ;;
      RELAY_KEY) S_RELAY_KEY=$value ;;
      TLS_POLICY_MAP) S_TLS_POLICY_MAP=$value ;;
      TLS_POLICY) S_TLS_POLICY=$value ;;
      RESOLVER) S_RESOLVER=$value ;;
      DNSSEC_BOGUS_NAME) S_DNSSEC_BOGUS=$value ;;
      TLS_POLICY_MAPS) S_TLS_POLICY_MAPS=$value ;;
      MTA_STS) S_MTA_STS=$value ;;
      DANE_FIRST) S_DANE_FIRST=$value ;;
      DANE_FIRST_PORT) S_DANE_FIRST_PORT=$value ;;
    esac
  done <"$1"
}

manages() { case " $S_SERVICES " in *" $1 "*) return 0 ;; esac; return 1; }

# ---------- services: systemd when the host runs it, the daemons' own tools otherwise ----------
have_systemd() { [ -d /run/systemd/system ]; }

conf_value() { # file key: last value of an opendkim.conf-style "Key value" line
  [ -r "$1" ] || return 0
  awk -v k="$2" 'tolower($1) == tolower(k) { v = $2 } END { if (v != "") print v }' "$1"
}

odk_pidfile() { local p; p=$(conf_value /etc/opendkim.conf PidFile); printf '%s' "${p:-/run/opendkim/opendkim.pid}"; }

odk_sig() { # what a reload cannot change: socket, pid file, user
  printf '%s|%s|%s' "$(conf_value /etc/opendkim.conf Socket)" "$(odk_pidfile)" "$(conf_value /etc/opendkim.conf UserID)"
}

pid_alive() { # pid [name]
  local pid=$1 state
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)
  [ -n "$state" ] && [ "$state" != Z ] || return 1
  [ -z "${2:-}" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

postfix_running() {
  postfix status >/dev/null 2>&1  # the master itself: Debian's postfix.service stays "active" without it
}

opendkim_running() { # [pidfile]
  if have_systemd; then systemctl is-active --quiet opendkim; return; fi
  local pidfile=${1:-$(odk_pidfile)}
  [ -r "$pidfile" ] && pid_alive "$(tr -dc 0-9 <"$pidfile")" opendkim
}

run_dir() { # the opendkim PidFile's directory, owned by the opendkim user
  local dir user
  dir=$(dirname "$(odk_pidfile)") user=$(conf_value /etc/opendkim.conf UserID)
  user=${user:-opendkim} user=${user%%:*}
  install -d -m 0750 -o "$user" -g "$(id -gn "$user" 2>/dev/null || echo root)" "$dir"
}

opendkim_stop() { # [pidfile]
  if have_systemd; then systemctl stop opendkim; return; fi
  local pidfile=${1:-$(odk_pidfile)} pid i
  [ -r "$pidfile" ] || return 0
  pid=$(tr -dc 0-9 <"$pidfile")
  if pid_alive "$pid" opendkim; then
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 100); do pid_alive "$pid" || break; sleep 0.1; done
    pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}

milter_group() { # a unix milter socket: postfix must be in opendkim's group to reach it (UMask 007)
  local user group
  case $(conf_value /etc/opendkim.conf Socket) in local:* | unix:* | /*) ;; *) return 0 ;; esac
  user=$(conf_value /etc/opendkim.conf UserID) user=${user:-opendkim} user=${user%%:*}
  group=$(id -gn "$user" 2>/dev/null) || return 0
  id -nG postfix 2>/dev/null | tr ' ' '\n' | grep -qx "$group" || usermod -a -G "$group" postfix
}

opendkim_start() {
  run_dir
  if have_systemd; then systemctl enable --quiet opendkim 2>/dev/null; systemctl restart opendkim; return; fi
  daemon opendkim -x /etc/opendkim.conf -P "$(odk_pidfile)" 9>&-  # the daemon must not keep our lock
}

postfix_do() { # start|stop|reload|restart
  if have_systemd; then
    # Debian: postfix.service is a wrapper; the master runs in postfix@-.service.
    case $1 in
      # daemon-reload: the resolver drop-in (postfix@-.service.d) may have come or gone with the files
      start) systemctl daemon-reload; systemctl enable --quiet postfix 2>/dev/null; systemctl start postfix postfix@- ;;
      stop) systemctl stop postfix postfix@- ;;
      restart) systemctl daemon-reload; systemctl restart postfix@- && systemctl start postfix ;;
      *) systemctl "$1" postfix@- && systemctl start postfix ;;
    esac
    return
  fi
  if [ "$1" != stop ]; then
    # What Debian's unit runs first: copy resolv.conf, certificates etc. into the chroot.
    [ -x /usr/lib/postfix/configure-instance.sh ] && /usr/lib/postfix/configure-instance.sh - >/dev/null 2>&1
  fi
  case $1 in  # 9>&-: the daemons must not inherit our lock
    restart) postfix stop >/dev/null 2>&1; postfix_start 9>&- ;;
    start) postfix_start 9>&- ;;
    *) daemon postfix "$1" 9>&- ;;
  esac
}

postfix_start() { # no systemd: with our resolv.conf live, the master starts in a mount namespace where it is
  # /etc/resolv.conf (what BindReadOnlyPaths does on systemd hosts); its children inherit that view
  if [ -f "$PF_RESOLV" ]; then
    daemon unshare --mount --propagation private -- sh -c 'mount --bind "$0" /etc/resolv.conf && exec postfix start' \
      "$PF_RESOLV"
  else
    daemon postfix start
  fi
}

resolv_sig() { # what Postfix's resolver view should be: ours (its digest) or the host's
  if [ -f "$PF_RESOLV" ]; then sha256sum <"$PF_RESOLV"; else echo host; fi
}

postfix_resolv_ok() { # does the running master see the resolv.conf it should (ours, or the host's own)?
  local pid want=/etc/resolv.conf
  pid=$(tr -dc 0-9 <"$(postconf -h queue_directory 2>/dev/null)/pid/master.pid" 2>/dev/null)
  pid_alive "$pid" master || return 0  # not running: the health check says so
  [ -f "$PF_RESOLV" ] && want=$PF_RESOLV
  cmp -s "/proc/$pid/root/etc/resolv.conf" "$want"
}

# ---------- the validating resolver (RESOLVER=unbound): Debian's unbound, loopback only ----------
unbound_running() {
  if have_systemd; then systemctl is-active --quiet unbound; return; fi
  [ -r /run/unbound.pid ] && pid_alive "$(tr -dc 0-9 </run/unbound.pid)" unbound
}

unbound_start() {
  if have_systemd; then systemctl enable --quiet unbound 2>/dev/null; systemctl start unbound; return; fi
  daemon unbound -c /etc/unbound/unbound.conf 9>&-
}

# One DNS query to the resolver on 127.0.0.1, with the DO bit: prints its rcode and "ad" when it vouched for
# the answer (python3, which the collector needs anyway; the host may have no dig).
DNS_PROBE='
import os, socket, struct, sys
name, qtype = sys.argv[1], int(sys.argv[2])
qid = os.urandom(2)
query = qid + struct.pack(">HHHHH", 0x0100, 1, 0, 0, 1)
query += b"".join(bytes([len(x)]) + x.encode() for x in name.strip(".").split(".") if x) + b"\0"
query += struct.pack(">HH", qtype, 1) + b"\0" + struct.pack(">HHIH", 41, 1232, 0x8000, 0)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(8)
    s.sendto(query, ("127.0.0.1", 53))
    while True:
        data = s.recv(4096)
        if len(data) >= 12 and data[:2] == qid:
            break
flags = struct.unpack(">H", data[2:4])[0]
codes = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}
print(codes.get(flags & 15, "RCODE%d" % (flags & 15)), "ad" if flags & 32 else "-")
'
dns_probe() { timeout -k 1 10 python3 -I -c "$DNS_PROBE" "$1" "$2" 2>/dev/null; }

resolver_ready() { # start unbound when needed; it must vouch for the root and refuse a broken name
  local got i
  RESOLVER_PROBLEM=""
  [ -x /usr/sbin/unbound ] || { RESOLVER_PROBLEM="unbound is not installed"; return 1; }
  if [ ! -f "$STATE/original/UNBOUND" ]; then  # how it was before us, for the teardown
    mkdir -p "$STATE/original"
    if unbound_running; then echo running; else echo stopped; fi >"$STATE/original/UNBOUND"
  fi
  if ! unbound_running; then
    unbound_start >"$WORK/out" 2>&1 || { RESOLVER_PROBLEM="unbound did not start: $(head -c 300 "$WORK/out")"; return 1; }
  fi
  for i in $(seq 1 20); do
    got=$(dns_probe . 6) && [ -n "$got" ] && break
    sleep 0.5
  done
  [ "$got" = "NOERROR ad" ] ||
    { RESOLVER_PROBLEM="unbound on 127.0.0.1 does not vouch for the root zone (got: ${got:-no answer}; want NOERROR with AD)"; return 1; }
  got=$(dns_probe "$S_DNSSEC_BOGUS" 1)
  case $got in SERVFAIL*) ;; *)
    RESOLVER_PROBLEM="unbound answered $S_DNSSEC_BOGUS, whose DNSSEC is broken on purpose, with ${got:-nothing} instead of SERVFAIL: it does not validate"
    return 1 ;;
  esac
}

# ---------- MTA-STS (MTA_STS=1): Debian's postfix-mta-sts-resolver as its package configures it ----------
MTA_STS_PID=/run/jira-mailhost-mta-sts.pid  # hosts without systemd: the daemon this script started
mta_sts_running() {
  if have_systemd; then systemctl is-active --quiet postfix-mta-sts-resolver; return; fi
  [ -r "$MTA_STS_PID" ] && pid_alive "$(tr -dc 0-9 <"$MTA_STS_PID")" mta-sts-daemon
}
mta_sts_start() {
  if have_systemd; then systemctl enable --quiet postfix-mta-sts-resolver 2>/dev/null; systemctl start postfix-mta-sts-resolver; return; fi
  # Not through daemon(): a shell function in the background is a subshell that waits for the daemon, holding
  # this session's stdin; this way the background job is the daemon itself (setsid does not fork here: job
  # control is off, so it does not lead a process group), and $! is its pid.
  # Its own environment, as systemd gives the package's unit (root's HOME would make aiohttp fail on ~/.netrc).
  local reset=()
  env --default-signal=HUP true 2>/dev/null && reset=("--default-signal=HUP,PIPE,TERM,INT")
  env ${reset[@]+"${reset[@]}"} -i PATH="$PATH" HOME=/var/lib/mta-sts LANG=C.UTF-8 \
    setsid setpriv --reuid=_mta-sts --regid=_mta-sts --init-groups \
    mta-sts-daemon -c /etc/mta-sts-daemon.yml </dev/null >/dev/null 2>&1 9>&- &
  echo $! >"$MTA_STS_PID"
}
# One socketmap request (a netstring) to a map on 127.0.0.1:PORT, or to a map program's stdin with PORT "-":
# prints the reply's payload.
SOCKETMAP_PROBE='
import socket, subprocess, sys
port, request = sys.argv[1], sys.argv[2].encode()
frame = b"%d:%s," % (len(request), request)
if port == "-":
    data = subprocess.run(sys.argv[3:], input=frame, capture_output=True, timeout=30).stdout
else:
    with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as s:
        s.sendall(frame)
        data = b""
        while not data.endswith(b",") and len(data) < 2000:
            chunk = s.recv(2000)
            if not chunk:
                break
            data += chunk
size, _, rest = data.partition(b":")
print(rest[:-1].decode("ascii", "replace") if size.isdigit() and len(rest) == int(size) + 1 else "BAD REPLY")
'
socketmap_probe() { timeout -k 1 40 python3 -I -c "$SOCKETMAP_PROBE" "$@" 2>/dev/null; }

policy_ready() { # MTA_STS=1: the MTA-STS daemon answers, and the staged DANE-first map holds mail it cannot vouch for
  local got i
  POLICY_PROBLEM=""
  command -v mta-sts-daemon >/dev/null || { POLICY_PROBLEM="postfix-mta-sts-resolver is not installed"; return 1; }
  if [ ! -f "$STATE/original/MTA_STS" ]; then
    mkdir -p "$STATE/original"
    if mta_sts_running; then echo running; else echo stopped; fi >"$STATE/original/MTA_STS"
  fi
  if ! mta_sts_running; then
    mta_sts_start >"$WORK/out" 2>&1 || { POLICY_PROBLEM="postfix-mta-sts-resolver did not start: $(head -c 300 "$WORK/out")"; return 1; }
  fi
  for i in $(seq 1 40); do
    got=$(socketmap_probe 8461 "postfix .invalid") && [ -n "$got" ] && break
    sleep 0.25
  done
  [ "$got" = "NOTFOUND " ] ||
    { POLICY_PROBLEM="postfix-mta-sts-resolver on 127.0.0.1:8461 does not answer (got: ${got:-nothing}; want NOTFOUND)"; return 1; }
  got=$(socketmap_probe - "dane $S_DNSSEC_BOGUS" /usr/bin/python3 -I "$(staged "$S_DANE_FIRST")")
  case $got in "TEMP "*) ;; *)
    POLICY_PROBLEM="the DANE-first map answered $S_DNSSEC_BOGUS, whose DNSSEC is broken on purpose, with '${got:-nothing}' instead of TEMP: it would not hold mail it cannot vouch for"
    return 1 ;;
  esac
}

smtp_probe() { # addr port: prints the first line the server sends (-k 1: TERM is ignored in the worker)
  timeout -k 1 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" && IFS= read -r -t 4 line <&3 && printf "%s\n" "$line" &&
                     printf "QUIT\r\n" >&3' "$1" "$2" 2>/dev/null | tr -d '\r'
}

smtpd_endpoint() { # where Jira talks to Postfix: from the live inet_interfaces, inet_protocols, master.cf
  local ifaces loopback=127.0.0.1 addr service port
  ifaces=$(postconf -h inet_interfaces 2>/dev/null)
  [ "$(postconf -h inet_protocols 2>/dev/null)" = ipv6 ] && loopback=::1
  case " ${ifaces//,/ } " in
    *" all "* | *" loopback-only "* | *" localhost "* | *" 127.0.0.1 "* | *" [::1] "*) addr=$loopback ;;
    *) addr=${ifaces%%[ ,]*} addr=${addr#[} addr=${addr%]} ;;
  esac
  service=$(postconf -M 2>/dev/null | awk '$2 == "inet" && $8 == "smtpd" { print $1; exit }')
  case $service in
    *:*) port=${service##*:} addr=${service%:*} addr=${addr#[} addr=${addr%]} ;;
    *) port=$service ;;
  esac
  case $port in smtp | '') port=25 ;; submission) port=587 ;; esac
  printf '%s %s' "${addr:-$loopback}" "$port"
}

milter_check() { # socket spec from opendkim.conf: is the opendkim process itself listening there?
  local spec=$1 port host
  case $spec in
    inet:* | inet6:*)
      port=${spec#*:} port=${port%%@*} host=${spec#*@}
      if command -v ss >/dev/null 2>&1; then
        ss -Hltnp "( sport = :$port )" 2>/dev/null | grep -q '"opendkim"'
      else
        timeout -k 1 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "${host:-127.0.0.1}" "$port" 2>/dev/null
      fi ;;
    local:* | unix:* | /*) [ -S "${spec#*:}" ] ;;
    *) return 1 ;;
  esac
}

HEALTH_PROBLEM=""
health() { # services...: wait (bounded) until each really serves; a daemon that died fails fast
  local banner endpoint spec down last_ok=0 start=$SECONDS
  while [ $((SECONDS - start)) -lt 10 ]; do
    stop_point
    HEALTH_PROBLEM="" down=0
    case " $* " in *" opendkim "*)
      spec=$(conf_value /etc/opendkim.conf Socket)
      if ! opendkim_running; then HEALTH_PROBLEM="opendkim is not running" down=1
      elif ! milter_check "$spec"; then HEALTH_PROBLEM="opendkim is not listening on its milter socket $spec"
      fi ;;
    esac
    case " $* " in *" postfix "*)
      if [ -z "$HEALTH_PROBLEM" ]; then
        endpoint=$(smtpd_endpoint)
        if ! postfix_running; then HEALTH_PROBLEM="postfix is not running" down=1
        else
          banner=$(smtp_probe ${endpoint})
          case $banner in 220*) ;; *) HEALTH_PROBLEM="postfix does not answer SMTP on ${endpoint/ /:} (got: ${banner:-nothing})" ;; esac
          if [ -z "$HEALTH_PROBLEM" ] && ! postfix_resolv_ok; then
            HEALTH_PROBLEM="postfix does not see the resolv.conf it should ($([ -f "$PF_RESOLV" ] && echo "$PF_RESOLV, the validating resolver" || echo "the host's own"))"
          fi
        fi
      fi ;;
    esac
    if [ -z "$HEALTH_PROBLEM" ]; then
      # Pass twice, half a second apart: a daemon that forked and then failed to bind is caught.
      [ "$last_ok" = 1 ] && return 0
      last_ok=1; sleep 0.5; continue
    fi
    last_ok=0
    [ "$down" = 1 ] && [ $((SECONDS - start)) -ge 2 ] && return 1
    sleep 0.25
  done
  return 1
}

port_holder() { # port: the program listening there, if any
  ss -Hltnp "( sport = :$1 )" 2>/dev/null | grep -o 'users:(("[^"]*"' | head -n 1 | cut -d'"' -f2
}

port_hint() { # problem text: name who holds the port the failed daemon wanted
  local port="" holder spec
  case $1 in
    opendkim*) spec=$(conf_value /etc/opendkim.conf Socket)
               case $spec in inet*:*@*) port=${spec#*:} port=${port%%@*} ;; esac ;;
    "postfix did not"* | "postfix is not running"* | "postfix does not answer"*)
      port=$(smtpd_endpoint) port=${port##* } ;;  # not for a problem that is no listener's (the resolver's)
  esac
  [ -n "$port" ] || return 0
  holder=$(port_holder "$port")
  [ -n "$holder" ] && printf ' (port %s is already in use by %s)' "$port" "$holder"
}

log_hint() { # what the mail log gained since the switch (errors only; logs hold no file contents)
  local lines=""
  if [ -r "$LOGFILE" ]; then
    lines=$(tail -c +"$((LOG_OFFSET + 1))" "$LOGFILE" | grep -E 'fatal|panic|error|warning' | tail -n 5)
  elif have_systemd; then
    lines=$(journalctl -q -u postfix@- -u opendkim --since "@$LOG_START" -p warning -n 5 -o cat 2>/dev/null)
  fi
  [ -z "$lines" ] || printf '%s\n' "$lines" | sed "s/^/$NAME:   log: /" >&2
}

running_services() { # the managed services running now, for rollback and health
  local out=""
  manages opendkim && opendkim_running && out+=" opendkim"
  manages postfix && postfix_running && out+=" postfix"
  printf '%s' "$out"
}

restore_from() { # dir: put every path listed in dir/PATHS back as it was (atomic per file)
  local state p rc=0
  while read -r state p; do
    case $state in
      present) { cp -a "$1/tree$p" "$p.jm-new" && mv -f "$p.jm-new" "$p"; } || { warn "could not restore $p"; rc=1; } ;;
      absent) rm -f "$p" ;;
    esac
  done <"$1/PATHS"
  return $rc
}

# ---------- bundle ----------
install -d -m 0700 -o root -g root "$STATE"
chmod 0700 "$STATE"
exec 9>"$STATE/lock"
flock -w 300 9 || reject "another jira-mailhost apply or teardown is still running on this host (waited 5 minutes)"
WORK=$STATE/work
rm -rf "$WORK" && mkdir -m 0700 "$WORK" || reject "cannot create $WORK"
trap 'rm -rf "$WORK"' EXIT

JOURNAL=$STATE/journal
put_back() { # the journal says a switch was cut off: the files live before it, whole, and daemons reading them
  [ -f "$STATE/backup/PATHS" ] && restore_from "$STATE/backup" ||
    { warn "ERROR: could not restore $STATE/backup; the host needs an admin (saved files are there)"; exit 3; }
  rm -f "$JOURNAL" "$STATE/applied"
  postfix_running && postfix_do reload >/dev/null 2>&1
  if opendkim_running; then opendkim_stop >/dev/null 2>&1; opendkim_start >/dev/null 2>&1; fi
}
if [ -f "$JOURNAL" ]; then
  # An earlier run was cut off between its backup and its confirmation: never leave a mix of two configs.
  warn "an earlier apply on $(host_label) stopped during its switch; putting back the files live before it"
  put_back
  warn "the configuration live before that apply is back; applying the new one now"
fi
stop_point() { # where the worker can stop on one whole configuration: act on a TERM or INT the supervisor took
  [ -s "$JM_STOP_FILE" ] || return 0
  local sig
  sig=$(head -c 4 "$JM_STOP_FILE")
  [ "$sig" = INT ] || sig=TERM
  if [ -f "$JOURNAL" ]; then
    warn "stopped by SIG$sig during the switch on $(host_label); putting back the files live before it"
    put_back
    warn "the previous configuration is live again; nothing else was changed. Run pulumi up again."
    exit 2
  fi
  if [ "${CONFIRMED:-0}" = 1 ]; then
    warn "SIG$sig after the new configuration was confirmed on $(host_label): finishing"
    : >"$JM_STOP_FILE"
    return 0
  fi
  warn "stopped by SIG$sig before anything changed on $(host_label); the previous configuration is still live."
  exit 1
}
stop_point

cat >"$WORK/payload.b64"
[ -s "$WORK/payload.b64" ] || reject "no bundle on stdin: the remote command must get the rendered bundle as its stdin"
base64 -d <"$WORK/payload.b64" >"$WORK/payload.tgz" 2>/dev/null || reject "the bundle on stdin is not valid base64"
tar -tzf "$WORK/payload.tgz" >"$WORK/members" 2>/dev/null || reject "the bundle is not a gzipped tar archive"
if grep -Evq '^(MANIFEST|files/[A-Za-z0-9._@+/-]*[A-Za-z0-9._@+-])$' "$WORK/members" || grep -Eq '(^|/)\.\.?(/|$)' "$WORK/members"; then
  reject "the bundle holds a member with an unsafe name"
fi
mkdir -m 0700 "$WORK/bundle"
tar -xzf "$WORK/payload.tgz" -C "$WORK/bundle" --no-same-owner --no-same-permissions 2>/dev/null || reject "cannot unpack the bundle"
[ -f "$WORK/bundle/MANIFEST" ] || reject "the bundle has no MANIFEST"
[ -z "$(find "$WORK/bundle" ! -type f ! -type d)" ] || reject "the bundle holds links or special files"

P=() MODE=() OWN=() GRP=() MAP=()
while IFS= read -r line || [ -n "$line" ]; do
  [ -n "$line" ] || continue
  read -r path mode owner group postmap sum extra <<<"$line"
  [[ $path =~ ^/[A-Za-z0-9._@+/-]+$ && $path != */ && ! $path =~ (^|/)\.\.?(/|$) ]] || reject "MANIFEST: bad path '$path'"
  [[ $mode =~ ^[0-7]{3,4}$ && $owner =~ ^[a-z_][a-z0-9_-]*$ && $group =~ ^[a-z_][a-z0-9_-]*$ ]] || reject "MANIFEST: bad mode/owner for $path"
  [[ $postmap =~ ^[01]$ && $sum =~ ^[0-9a-f]{64}$ && -z ${extra:-} ]] || reject "MANIFEST: bad line for $path"
  [ -f "$WORK/bundle/files$path" ] || reject "MANIFEST names $path but the bundle does not hold it"
  [ "$(sha256sum <"$WORK/bundle/files$path" | cut -c1-64)" = "$sum" ] || reject "bundle corrupted: the checksum of $path does not match MANIFEST"
  P+=("$path") MODE+=("$mode") OWN+=("$owner") GRP+=("$group") MAP+=("$postmap")
done <"$WORK/bundle/MANIFEST"
[ "${#P[@]}" -gt 0 ] || reject "MANIFEST is empty"
[ "$(find "$WORK/bundle/files" -type f | wc -l)" -eq "${#P[@]}" ] || reject "the bundle holds files that MANIFEST does not list"
[ -f "$WORK/bundle/files$SETTINGS" ] || reject "the bundle has no $SETTINGS (PACKAGES, SERVICES, DRAIN_SECONDS)"
read_settings "$WORK/bundle/files$SETTINGS"
MANAGED=()
for x in opendkim postfix; do manages $x && MANAGED+=("$x"); done
stop_point

# ---------- packages (a no-op when installed) ----------
missing=()
for pkg in $S_PACKAGES; do
  [[ $pkg =~ ^[a-z0-9][a-z0-9+.-]+$ ]] || reject "settings.env PACKAGES: '$pkg' is not a Debian package name"
  [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null)" = "ii " ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt_log=$WORK/apt.log
  { apt-get -q -o DPkg::Lock::Timeout=300 update &&
    apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confold --no-install-recommends install "${missing[@]}"; } >"$apt_log" 2>&1 ||
    { tail -n 15 "$apt_log" >&2; reject "apt-get could not install ${missing[*]} (output above)"; }
fi
stop_point

for i in "${!P[@]}"; do
  id -u "${OWN[$i]}" >/dev/null 2>&1 || reject "${P[$i]}: owner '${OWN[$i]}' does not exist on this host"
  getent group "${GRP[$i]}" >/dev/null || reject "${P[$i]}: group '${GRP[$i]}' does not exist on this host"
done

# ---------- what changes ----------
dbsuffix() { case $1 in hash | btree) echo db ;; lmdb) echo lmdb ;; cdb) echo cdb ;; *) echo db ;; esac; }
live_matches() { # i: is the live file exactly what the bundle says?
  local p=${P[$1]}
  [ -f "$p" ] && [ ! -L "$p" ] || return 1
  [ "$(stat -c '%a %U %G' "$p")" = "$(printf '%o' "0${MODE[$1]}") ${OWN[$1]} ${GRP[$1]}" ] || return 1
  cmp -s "$p" "$WORK/bundle/files$p"
}
SUFFIX=$(dbsuffix "$(postconf -d -h default_database_type 2>/dev/null)")
unchanged=1
for i in "${!P[@]}"; do
  live_matches "$i" || { unchanged=0; break; }
  if [ "${MAP[$i]}" = 1 ] && { [ ! -f "${P[$i]}.$SUFFIX" ] || [ "${P[$i]}.$SUFFIX" -ot "${P[$i]}" ]; }; then unchanged=0; break; fi
done
managed_list() { # every path this bundle manages, lookup tables included
  local i
  for i in "${!P[@]}"; do
    echo "${P[$i]}"
    [ "${MAP[$i]}" = 1 ] && echo "${P[$i]}.$SUFFIX"
  done | sort
}
managed_list >"$WORK/managed.new"
[ -f "$STATE/managed" ] && cmp -s "$STATE/managed" "$WORK/managed.new" || unchanged=0
# Files in place but never confirmed live (an earlier run was cut off): not "unchanged".
sha256sum <"$WORK/bundle/MANIFEST" >"$WORK/applied"
cmp -s "$WORK/applied" "$STATE/applied" 2>/dev/null || unchanged=0

salt() { [ -s "$STATE/salt" ] || head -c 32 /dev/urandom | base64 >"$STATE/salt"; cat "$STATE/salt"; }
config_id() { { salt; cat "$WORK/bundle/MANIFEST"; } | sha256sum | cut -c1-12; }

if [ "$unchanged" = 1 ]; then
  started=""
  if manages opendkim && ! opendkim_running; then opendkim_start >/dev/null 2>&1; started+=" opendkim"; fi
  # Postfix holds the mail (TEMP) while the resolver or the policy daemon is down: start them too.
  if [ "$S_RESOLVER" = unbound ] && ! unbound_running; then unbound_start >/dev/null 2>&1; started+=" unbound"; fi
  if [ "$S_MTA_STS" = 1 ] && ! mta_sts_running; then mta_sts_start >/dev/null 2>&1; started+=" postfix-mta-sts-resolver"; fi
  if manages postfix && ! postfix_running; then postfix_do start >/dev/null 2>&1; started+=" postfix"; fi
  # Started by hand (`postfix start`), the master sees the host's resolv.conf instead of the validating
  # resolver: its DANE lookups would find nothing signed and deliver as if opportunistic. Restart it in its view.
  repaired=""
  if manages postfix && postfix_running && ! postfix_resolv_ok; then
    postfix_do restart >/dev/null 2>&1
    repaired="; restarted postfix, which did not see $([ -f "$PF_RESOLV" ] && echo "the validating resolver" || echo "the host's resolv.conf")"
  fi
  if ! health "${MANAGED[@]}"; then
    warn "ERROR: the configuration is unchanged but $HEALTH_PROBLEM on $(host_label)."
    warn "the host needs an admin: see /var/log/mail.log (journalctl -u postfix -u opendkim on systemd hosts)"
    exit 3
  fi
  say "unchanged: config $(config_id) already live on $(host_label)${started:+ (started$started)}$repaired"
  exit 0
fi

# ---------- stage: a full copy of /etc/postfix with the managed files overlaid ----------
STAGE=$WORK/stage
ROOT=$STAGE/root
mkdir -p "$ROOT"
if [ -d /etc/postfix ]; then cp -a /etc/postfix "$STAGE/postfix"; else mkdir -p "$STAGE/postfix"; fi
staged() { # path -> where its staged copy is
  case $1 in /etc/postfix/*) printf '%s' "$STAGE/postfix/${1#/etc/postfix/}" ;; *) printf '%s' "$ROOT$1" ;; esac
}
put() { # src dest mode owner group
  # Dated 2 s back: Postfix re-reads a config file modified this very second until it is older.
  mkdir -p "$(dirname "$2")" && cp "$1" "$2.jm-new" && chown "$4:$5" "$2.jm-new" && chmod "$3" "$2.jm-new" &&
    touch -d "@$((EPOCHSECONDS - 2))" "$2.jm-new" && mv -f "$2.jm-new" "$2"
}
for i in "${!P[@]}"; do
  put "$WORK/bundle/files${P[$i]}" "$(staged "${P[$i]}")" "${MODE[$i]}" "${OWN[$i]}" "${GRP[$i]}" || reject "cannot stage ${P[$i]}"
done
# Paths the previous apply managed and this one does not go back to the host's original.
RETIRED=()
if [ -f "$STATE/managed" ]; then
  while IFS= read -r old; do RETIRED+=("$old"); done < <(comm -23 "$STATE/managed" "$WORK/managed.new")
fi
orig_state() { awk -v p="$1" '$2 == p { s = $1 } END { print s }' "$STATE/original/PATHS" 2>/dev/null; }
for old in ${RETIRED[@]+"${RETIRED[@]}"}; do
  case $old in /etc/postfix/*)
    rm -f "$(staged "$old")"
    [ "$(orig_state "$old")" = present ] && cp -a "$STATE/original/tree$old" "$(staged "$old")" ;;
  esac
done

errors() { # filter a tool's output: staging paths shown as the live ones, at most 20 lines
  sed -e "s#$STAGE/postfix#/etc/postfix#g" -e "s#$ROOT##g" | head -n 20 >&2
}
# ---------- validate the stage; any warning is a failure ----------
postconf -c "$STAGE/postfix" -n >/dev/null 2>"$WORK/out"
if [ $? -ne 0 ] || [ -s "$WORK/out" ]; then errors <"$WORK/out"; reject "main.cf is not valid (postconf -n, above)"; fi
postconf -c "$STAGE/postfix" -M >"$WORK/services" 2>"$WORK/out"
if [ $? -ne 0 ] || [ -s "$WORK/out" ]; then errors <"$WORK/out"; reject "master.cf is not valid (postconf -M, above)"; fi
daemon_dir=$(postconf -c "$STAGE/postfix" -h daemon_directory)
awk -v dir="$daemon_dir" '
  function bad(why) { printf "master.cf: service \"%s %s\": %s\n", $1, $2, why; status = 1 }
  NF < 8 { bad("needs 8 fields"); next }
  $2 !~ /^(inet|unix|unix-dgram|fifo|pass)$/ { bad("unknown type \"" $2 "\"") }
  $3 !~ /^[yn-]$/ || $4 !~ /^[yn-]$/ || $5 !~ /^[yn-]$/ { bad("private/unpriv/chroot must be y, n or -") }
  $6 !~ /^(-|[0-9]+\??)$/ || $7 !~ /^(-|[0-9]+)$/ { bad("wakeup/maxproc must be numbers or -") }
  { cmd = ($8 ~ /^\//) ? $8 : dir "/" $8; if (system("test -x \"" cmd "\"") != 0) bad("no such program " cmd) }
  END { exit status }' "$WORK/services" >"$WORK/out" 2>&1 || { errors <"$WORK/out"; reject "master.cf is not valid (above)"; }
# Every Postfix tool loads main.cf the same way; this one says why on stderr (postfix check only logs).
postmap -c "$STAGE/postfix" -q probe static:ok >/dev/null 2>"$WORK/out"
if [ $? -ne 0 ] || [ -s "$WORK/out" ]; then errors <"$WORK/out"; reject "main.cf is not usable on this host (above)"; fi
SUFFIX=$(dbsuffix "$(postconf -c "$STAGE/postfix" -h default_database_type 2>/dev/null)")
COMPANIONS=()
for i in "${!P[@]}"; do
  [ "${MAP[$i]}" = 1 ] || continue
  src=$(staged "${P[$i]}")
  if ! postmap -c "$STAGE/postfix" "$src" >"$WORK/out" 2>&1; then
    errors <"$WORK/out"; reject "postmap failed for ${P[$i]} (above)"
  fi
  chown "${OWN[$i]}:${GRP[$i]}" "$src.$SUFFIX" && chmod "${MODE[$i]}" "$src.$SUFFIX"
  # Lookup tables are not byte-reproducible: keep the live one while its source is unchanged.
  if live_matches "$i" && [ -f "${P[$i]}.$SUFFIX" ] && [ ! "${P[$i]}.$SUFFIX" -ot "${P[$i]}" ]; then continue; fi
  COMPANIONS+=("${P[$i]}.$SUFFIX")
done
managed_list >"$WORK/managed.new"

# ---------- the shape of what would go live (defence behind the stack's grammars) ----------
[ -n "$S_PARAMETERS" ] || reject "settings.env has no MAIN_CF_PARAMETERS: render the bundle with this program"
# postconf -c shows config_directory = the stage itself: not the file's own, unless it writes one.
{ postconf -c "$STAGE/postfix" -n 2>/dev/null | awk '$1 != "config_directory" { print $1 }'
  grep -Eo '^[[:space:]]*config_directory[[:space:]]*=' "$STAGE/postfix/main.cf" | tr -d ' =\t'; } | sort >"$WORK/params.live"
tr ' ' '\n' <<<"$S_PARAMETERS" | sort >"$WORK/params.want"
if ! cmp -s "$WORK/params.live" "$WORK/params.want"; then
  diff "$WORK/params.want" "$WORK/params.live" | grep '^[<>]' | sed -e 's/^</missing:/' -e 's/^>/unexpected:/' | errors
  reject "main.cf sets other parameters than the templates write for this mode (above)"
fi
staged_conf() { postconf -c "$STAGE/postfix" -h "$1" 2>/dev/null; }
if [ -n "$S_REROUTE_TO" ]; then
  # Staging must never mail real users: every recipient, whatever it looks like, becomes REROUTE_TO.
  [ "$(staged_conf virtual_alias_maps)" = "regexp:$S_REROUTE_MAP" ] ||
    reject "virtual_alias_maps is not the reroute map $S_REROUTE_MAP: staging would mail real users"
  for probe in "jm-probe-$RANDOM$RANDOM@probe.invalid" "ceo@customer.example" "a.b+tag@sub.example.org"; do
    got=$(postmap -c "$STAGE/postfix" -q "$probe" "regexp:$(staged "$S_REROUTE_MAP")" 2>"$WORK/out")
    if [ "$got" != "$S_REROUTE_TO" ] || [ -s "$WORK/out" ]; then
      errors <"$WORK/out"; reject "the reroute map sends $probe to '${got:-nothing}', not $S_REROUTE_TO"
    fi
  done
fi
if [ -n "$S_RELAY_KEY" ]; then
  # Exactly one password entry, for the relay itself (the entries are counted, never printed).
  [ "$(staged_conf relayhost)" = "$S_RELAY_KEY" ] || reject "relayhost is not $S_RELAY_KEY"
  sasl_map="$(staged_conf default_database_type):$(staged /etc/postfix/sasl_passwd)"
  postmap -c "$STAGE/postfix" -s "$sasl_map" 2>/dev/null | awk '{ print $1 }' >"$WORK/sasl.keys"
  [ "$(cat "$WORK/sasl.keys")" = "$S_RELAY_KEY" ] ||
    reject "sasl_passwd must hold exactly one entry, for $S_RELAY_KEY (it holds $(wc -l <"$WORK/sasl.keys"))"
fi

[ "$(staged_conf smtp_tls_policy_maps)" = "$S_TLS_POLICY_MAPS" ] ||
  reject "smtp_tls_policy_maps is not ${S_TLS_POLICY_MAPS:-empty}, the policy tables of these settings"
if [ -n "$S_TLS_POLICY" ]; then
  # A domain that must not get mail in clear: Postfix itself must look up exactly the level the stack set.
  for pair in $S_TLS_POLICY; do
    domain=${pair%%=*} level=${pair#*=}
    got=$(postmap -c "$STAGE/postfix" -q "$domain" "texthash:$(staged "$S_TLS_POLICY_MAP")" 2>"$WORK/out")
    if [ "$got" != "$level" ] || [ -s "$WORK/out" ]; then
      errors <"$WORK/out"; reject "the TLS policy table gives $domain '${got:-nothing}', not $level"
    fi
  done
fi

has_path() { local q; for q in "${P[@]}"; do [ "$q" = "$1" ] && return 0; done; return 1; }
case $S_RESOLVER in
  "") has_path "$PF_RESOLV" && reject "the bundle has $PF_RESOLV but settings.env names no RESOLVER" ;;
  unbound)
    has_path "$PF_RESOLV" || reject "settings.env says RESOLVER=unbound but the bundle has no $PF_RESOLV"
    [ "$(staged_conf smtp_dns_support_level)" = dnssec ] ||
      reject "RESOLVER=unbound but main.cf does not ask for DNSSEC (smtp_dns_support_level)"
    [[ $S_DNSSEC_BOGUS =~ ^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$ ]] ||
      reject "settings.env DNSSEC_BOGUS_NAME: '$S_DNSSEC_BOGUS' is not a domain name" ;;
  *) reject "settings.env RESOLVER: '$S_RESOLVER' is not one this script runs (unbound)" ;;
esac
case $S_MTA_STS in
  "") [ -z "$S_DANE_FIRST" ] || reject "settings.env names DANE_FIRST but not MTA_STS" ;;
  1)
    [ "$S_RESOLVER" = unbound ] || reject "MTA_STS=1 needs RESOLVER=unbound: DANE goes first"
    has_path "$S_DANE_FIRST" || reject "settings.env says DANE_FIRST=$S_DANE_FIRST but the bundle has no such file"
    [[ $S_DANE_FIRST_PORT =~ ^[0-9]{1,5}$ ]] || reject "settings.env DANE_FIRST_PORT: '$S_DANE_FIRST_PORT' is not a port"
    [ "$(postconf -c "$STAGE/postfix" -Fh "127.0.0.1:$S_DANE_FIRST_PORT/inet/command" 2>/dev/null)" = \
      "spawn user=nobody argv=/usr/bin/python3 -I $S_DANE_FIRST" ] ||
      reject "master.cf does not run $S_DANE_FIRST as nobody on 127.0.0.1:$S_DANE_FIRST_PORT" ;;
  *) reject "settings.env MTA_STS: '$S_MTA_STS' is not 1" ;;
esac

postfix -c "$STAGE/postfix" check >"$WORK/out" 2>&1
if [ $? -ne 0 ] || grep -qiE 'warning|fatal|error' "$WORK/out"; then
  errors <"$WORK/out"; reject "postfix check failed (output above; details in the mail log)"
fi
if [ -f "$(staged /etc/opendkim.conf)" ]; then
  # opendkim -n opens the files it names: point it at the staged copies of managed files.
  check_conf=$WORK/opendkim.check.conf
  cp "$(staged /etc/opendkim.conf)" "$check_conf"
  for i in "${!P[@]}"; do
    p=${P[$i]}
    [ "$p" = /etc/opendkim.conf ] && continue
    p_re=$(printf '%s' "$p" | sed 's/[.+]/\\&/g')
    sed -i -E "s#(^|[[:space:]:,])$p_re([[:space:],]|\$)#\1$(staged "$p")\2#g" "$check_conf"
  done
  opendkim -n -x "$check_conf" >"$WORK/out" 2>&1
  if [ $? -ne 0 ] || [ -s "$WORK/out" ]; then
    sed -e "s#$check_conf#/etc/opendkim.conf#g" "$WORK/out" | errors; reject "opendkim.conf is not valid (opendkim -n, above)"
  fi
fi

if [ "$S_RESOLVER" = unbound ] && ! resolver_ready; then
  reject "the validating resolver DANE needs is not usable: $RESOLVER_PROBLEM (Postfix does not use it yet). Let this host reach the root name servers (UDP and TCP port 53 out), or set delivery.outboundTls: opportunistic and pulumi up"
fi
if [ "$S_MTA_STS" = 1 ] && ! policy_ready; then
  reject "the TLS policy tables of dane+mta-sts are not usable: $POLICY_PROBLEM (Postfix does not use them yet). Fix that, or set delivery.outboundTls: dane (no MTA-STS) or opportunistic and pulumi up"
fi
[ "$S_RESOLVER" = unbound ] && say "checked: unbound on 127.0.0.1 vouches for the root (AD) and refuses $S_DNSSEC_BOGUS (SERVFAIL)"
[ "$S_MTA_STS" = 1 ] && say "checked: postfix-mta-sts-resolver answers on 127.0.0.1:8461; the DANE-first map holds mail for $S_DNSSEC_BOGUS"

stop_point
# ---------- save the host's originals once, back up what is live, switch file by file ----------
snapshot() { # dir what paths...: copy each path into dir/tree, noting "present|absent path" in dir/PATHS
  local dir=$1 what=$2 p
  shift 2
  mkdir -p "$dir/tree" && touch "$dir/PATHS"
  for p in "$@"; do
    if [ -e "$p" ] || [ -L "$p" ]; then
      cp -a --parents "$p" "$dir/tree" || reject "cannot $what $p"
      echo "present $p" >>"$dir/PATHS"
    else
      echo "absent $p" >>"$dir/PATHS"
    fi
  done
}

TARGETS=("${P[@]}" ${COMPANIONS[@]+"${COMPANIONS[@]}"})
unsaved=()
for p in "${TARGETS[@]}"; do [ -n "$(orig_state "$p")" ] || unsaved+=("$p"); done
snapshot "$STATE/original" "save the original" ${unsaved[@]+"${unsaved[@]}"}
if [ ! -f "$STATE/original/SERVICES" ]; then
  for s in opendkim postfix; do
    if { [ $s = postfix ] && postfix_running; } || { [ $s = opendkim ] && opendkim_running; }; then r=running; else r=stopped; fi
    e=unknown; have_systemd && e=$(systemctl is-enabled $s 2>/dev/null)
    echo "$s $r ${e:-unknown}"
  done >"$STATE/original/SERVICES"
fi

# Where the new config logs, and how far that log is now: on failure we quote what it adds.
LOGFILE=$(postconf -c "$STAGE/postfix" -h maillog_file 2>/dev/null)
LOGFILE=${LOGFILE:-/var/log/mail.log} LOG_START=$EPOCHSECONDS
LOG_OFFSET=$(stat -c %s "$LOGFILE" 2>/dev/null || echo 0)
old_inet="$(postconf -h inet_interfaces 2>/dev/null) $(postconf -h inet_protocols 2>/dev/null)"
new_inet="$(postconf -c "$STAGE/postfix" -h inet_interfaces) $(postconf -c "$STAGE/postfix" -h inet_protocols)"
old_odk_pidfile=$(odk_pidfile) old_odk_sig=$(odk_sig) old_resolv=$(resolv_sig)
PRE_RUNNING=$(running_services)

BACKUP=$STATE/backup
rm -rf "$BACKUP"
snapshot "$BACKUP" "back up" "${TARGETS[@]}" ${RETIRED[@]+"${RETIRED[@]}"}

mkparents() { # create missing parent dirs 0755, remembered so teardown removes them
  local dir=$1 missing=()
  while [ ! -d "$dir" ]; do missing=("$dir" ${missing[@]+"${missing[@]}"}); dir=$(dirname "$dir"); done
  for dir in ${missing[@]+"${missing[@]}"}; do
    install -d -m 0755 -o root -g root "$dir" || return 1
    [ -n "$(orig_state "$dir")" ] || echo "dir $dir" >>"$STATE/original/PATHS"
  done
}
switch_in() { # staged-source live-path: atomic replace, skipped when identical
  local src=$1 p=$2
  if [ -f "$p" ] && [ ! -L "$p" ] && cmp -s "$src" "$p" && [ "$(stat -c '%a %U %G' "$src")" = "$(stat -c '%a %U %G' "$p")" ]; then
    return 0
  fi
  mkparents "$(dirname "$p")" && cp -a "$src" "$p.jm-new" && mv -f "$p.jm-new" "$p" || return 1
  CHANGED+=("$p")
}

CHANGED=()
failure=""
stop_point
config_id >"$JOURNAL"  # from here until confirmed or rolled back, a new run restores backup/ first
for p in "${TARGETS[@]}"; do
  switch_in "$(staged "$p")" "$p" || { failure="could not install $p"; break; }
  stop_point
done
if [ -z "$failure" ]; then
  for old in ${RETIRED[@]+"${RETIRED[@]}"}; do
    case $(orig_state "$old") in
      present) switch_in "$STATE/original/tree$old" "$old" || failure="could not restore $old" ;;
      *) [ -e "$old" ] && rm -f "$old" && CHANGED+=("$old") ;;
    esac
  done
fi

# ---------- (re)start what the change touches; check it really serves ----------
restart_services() { # reload when enough (opendkim needs ~6 s to stop), restart when needed
  local dkim=0 pf=0 p pid
  for p in ${CHANGED[@]+"${CHANGED[@]}"}; do
    case $p in /etc/opendkim*) dkim=1 ;; /etc/postfix/*) pf=1 ;; esac
  done
  [ "${#CHANGED[@]}" -gt 0 ] || dkim=1 pf=1  # files already in place: make sure the daemons read them
  if manages opendkim && { [ $dkim = 1 ] || ! opendkim_running "$old_odk_pidfile"; }; then
    if opendkim_running "$old_odk_pidfile" && [ "$old_odk_sig" = "$(odk_sig)" ]; then
      if have_systemd; then systemctl reload opendkim
      else pid=$(tr -dc 0-9 <"$old_odk_pidfile") && kill -USR1 "$pid"; fi
    else
      opendkim_stop "$old_odk_pidfile" >/dev/null 2>&1
      opendkim_start >"$WORK/out" 2>&1 || { SERVICE_PROBLEM="opendkim did not start: $(head -c 400 "$WORK/out")"; return 1; }
    fi
  fi
  if manages postfix; then
    if ! postfix_running; then
      postfix_do start >"$WORK/out" 2>&1 || { SERVICE_PROBLEM="postfix did not start: $(grep -m3 -iE 'fatal|error' "$WORK/out")"; return 1; }
    elif [ "$old_inet" != "$new_inet" ] || [ "$old_resolv" != "$(resolv_sig)" ]; then
      # a new listener, or another resolver: a reload keeps the master's sockets and its /etc/resolv.conf
      postfix_do restart >"$WORK/out" 2>&1 || { SERVICE_PROBLEM="postfix did not restart: $(grep -m3 -iE 'fatal|error' "$WORK/out")"; return 1; }
    elif [ $pf = 1 ]; then
      postfix_do reload >"$WORK/out" 2>&1 || { SERVICE_PROBLEM="postfix reload failed: $(grep -m3 -iE 'fatal|error' "$WORK/out")"; return 1; }
    fi
  fi
  return 0
}

metrics_timer() { # systemd hosts: (re)start the collector's timer; elsewhere run the collector yourself
  local unit=jira-mailhost-metrics.timer
  [ -f "/etc/systemd/system/$unit" ] && have_systemd || return 0
  { systemctl daemon-reload && systemctl enable --quiet --now "$unit"; } >"$WORK/out" 2>&1 ||
    warn "warning: could not start $unit (metrics only; mail is fine): $(head -c 300 "$WORK/out")"
}

SERVICE_PROBLEM=""
if [ -z "$failure" ]; then
  manages opendkim && run_dir && milter_group
  stop_point
  if ! restart_services; then failure=$SERVICE_PROBLEM
  elif ! health "${MANAGED[@]}"; then failure=$HEALTH_PROBLEM
  fi
fi

if [ -n "$failure" ]; then
  warn "ERROR: the new configuration failed on $(host_label): $failure$(port_hint "$failure")"
  log_hint
  warn "restoring the previous configuration..."
  # Put the old files back, then bring back exactly the services that ran before the switch.
  old_odk_pidfile=$(odk_pidfile) old_odk_sig=$(odk_sig) old_inet=$new_inet old_resolv=$(resolv_sig)
  if restore_from "$BACKUP"; then
    CHANGED=("${TARGETS[@]}") SERVICE_PROBLEM="" HEALTH_PROBLEM=""
    new_inet="$(postconf -h inet_interfaces 2>/dev/null) $(postconf -h inet_protocols 2>/dev/null)"
    S_SERVICES=$PRE_RUNNING
    manages opendkim || opendkim_stop "$old_odk_pidfile" >/dev/null 2>&1
    manages postfix || { postfix_running && postfix_do stop >/dev/null 2>&1; }
    if [ -z "$PRE_RUNNING" ] || { restart_services && health $PRE_RUNNING; }; then
      rm -f "$JOURNAL"
      warn "the previous configuration is live again${PRE_RUNNING:+ (running:$PRE_RUNNING, answering)}; nothing else was changed."
      warn "fix the stack settings and run pulumi up again."
      exit 2
    fi
    warn "ROLLBACK FAILED: the previous configuration is back on disk but ${SERVICE_PROBLEM:-$HEALTH_PROBLEM}."
  else
    warn "ROLLBACK FAILED: could not put every previous file back (see above)."
  fi
  warn "the host needs an admin: check postfix status, opendkim, /var/log/mail.log; saved files are in $BACKUP."
  exit 3
fi

mv -f "$WORK/managed.new" "$STATE/managed"
mv -f "$WORK/applied" "$STATE/applied"
# What is live now, for `mailhost status` and the metrics collector (drift = a live file that differs).
install -m 0600 "$WORK/bundle/MANIFEST" "$STATE/manifest"
rm -f "$JOURNAL"
CONFIRMED=1
stop_point
metrics_timer
if [ "${#CHANGED[@]}" -eq 0 ]; then
  say "config $(config_id) was already on disk on $(host_label); postfix and opendkim reloaded it"
else
  say "applied config $(config_id) on $(host_label): ${#CHANGED[@]} file(s) changed: ${CHANGED[*]}"
fi
say "postfix and opendkim are running and answering (stack ${S_STACK:-?}$([ "$S_PRODUCTION" = 1 ] && echo ', production'))."
exit 0
}
