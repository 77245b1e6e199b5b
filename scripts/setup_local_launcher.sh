#!/usr/bin/env bash
# One-time machine setup for the opt-in launcher test (tests/test_cluster_launch.py, `make test-launcher`):
# `ray up cluster-local.yaml` reaches 127.0.0.1 over SSH as a dedicated unprivileged user, so that the
# `ray stop` which `ray down` always runs cannot touch Ray processes owned by anyone else. Needs root.
set -euo pipefail
user=raylocal
command -v sshd >/dev/null && command -v rsync >/dev/null || {
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server rsync
}
id "$user" >/dev/null 2>&1 || { useradd -m -s /bin/bash "$user" && usermod -p '*' "$user"; }
# the nodes install with the same pip settings (index, local wheels) as this machine
if [ -f /etc/pip.conf ] || [ -f "$HOME/.config/pip/pip.conf" ]; then
  install -d -o "$user" "/home/$user/.config/pip"
  cat /etc/pip.conf "$HOME/.config/pip/pip.conf" 2>/dev/null > "/home/$user/.config/pip/pip.conf" || true
  chown "$user" "/home/$user/.config/pip/pip.conf"
fi
echo "launcher prerequisites ready: sshd, rsync, user $user"
