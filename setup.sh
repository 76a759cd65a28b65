#!/usr/bin/env bash
# Installs everything jira-mailhost and its tests need on a fresh Debian machine (as root):
# the Debian packages the lab and the real-software tests drive, and a venv in .venv.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
packages=(postfix opendkim opendkim-tools openssh-server openssh-client knot knot-dnsutils swaks
          iproute2 iputils-ping procps libsasl2-modules sasl2-bin ca-certificates python3 python3-venv sudo
          shellcheck
          unbound      # the validating resolver DANE needs: the lab jira host runs it as a pushed host would
          postfix-mta-sts-resolver python3-dnspython  # outboundTls: dane+mta-sts, run by the lab jira host
          systemd      # only for systemd-analyze: tests/real/test_metrics_unit.py verifies the collector's unit offline
          prometheus   # only for promtool: tests/real/test_alert_rules.py checks and unit-tests the alert rules
          cloud-init   # only for `cloud-init schema`: tests/real/test_cloud_init_real.py checks the EC2 user data
          dovecot-imapd)  # the lab's mailboxes (IMAPS in the MX's namespace) for `mailhost reports` and the canary
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # The prometheus package would enable and start a Prometheus server (port 9090) on a machine that runs
  # systemd; setup.sh must never start one, so its unit is masked before the package arrives.
  if [[ " ${missing[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then
    systemctl mask --quiet prometheus.service
  fi
  # Dovecot likewise: the lab runs its own instance in a namespace; the machine must not listen on 143/993.
  if [[ " ${missing[*]} " == *" dovecot-imapd "* && -d /run/systemd/system ]]; then
    systemctl mask --quiet dovecot.service dovecot.socket
  fi
  # And postfix-mta-sts-resolver: only the lab's jira host runs it (in its own network namespace).
  if [[ " ${missing[*]} " == *" postfix-mta-sts-resolver "* && -d /run/systemd/system ]]; then
    systemctl mask --quiet postfix-mta-sts-resolver.service
  fi
  # Without systemd, a package's maintainer script starts its daemon through invoke-rc.d unless a
  # policy-rc.d says no: one that refuses every start is in place for this install only.
  policy_made=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy_made=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  # cloud-init is here for its schema check only: it must never configure this machine at its next boot.
  if [[ " ${missing[*]} " == *" cloud-init "* ]]; then
    mkdir -p /etc/cloud && touch /etc/cloud/cloud-init.disabled
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [[ -n "$policy_made" ]]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi
# Packages start nothing here: the lab runs each daemon inside its own namespaces.
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements-dev.txt
.venv/bin/pip install -q --no-deps -e .
echo "setup done: $(.venv/bin/python --version), $(postconf -d mail_version), $(knotd --version), $(promtool --version 2>&1 | head -1), dovecot $(dovecot --version)"
