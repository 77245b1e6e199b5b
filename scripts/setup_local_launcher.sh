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
# the nodes install with the same pip settings (index, local wheels) as this machine: /etc/pip.conf
# applies to every user already; the caller's per-user files are merged (later wins) into raylocal's
user_confs=("$HOME/.pip/pip.conf" "$HOME/.config/pip/pip.conf")
if [ -f "${user_confs[0]}" ] || [ -f "${user_confs[1]}" ]; then
  install -d -o "$user" "/home/$user/.config/pip"
  python3 - "/home/$user/.config/pip/pip.conf" "${user_confs[@]}" <<'PY'
import configparser, sys
merged = configparser.ConfigParser(interpolation=None)
merged.read(sys.argv[2:])  # missing files are skipped; a key in a later file overrides an earlier one
with open(sys.argv[1], "w") as f:
    merged.write(f)
PY
  chown "$user" "/home/$user/.config/pip/pip.conf"
fi
echo "launcher prerequisites ready: sshd, rsync, user $user"
