#!/usr/bin/env bash
# What tests/test_cluster_jobs.py needs beside the Python packages: an SSH server, rsync and
# netcat, so that Ray's cluster launcher (`ray up cluster/local.yaml`) can reach this machine
# over SSH the way it reaches EC2 nodes (Ray's `auth.ssh_proxy_command: nc 127.0.0.1 PORT`
# reaches the test's sshd on its own port). Debian packages; idempotent (does nothing when all
# are there). The test starts its own sshd on 127.0.0.1 with a throwaway config and keys: this
# script neither enables nor starts the system's ssh service.
# Run as root (CI does): sudo bash scripts/install_cluster_test_deps.sh
set -euo pipefail

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
command -v nc >/dev/null 2>&1 || missing+=(netcat-openbsd)
{ command -v ssh && command -v ssh-keygen; } >/dev/null 2>&1 || missing+=(openssh-client)

if [ ${#missing[@]} -eq 0 ]; then
    echo "install_cluster_test_deps: sshd, rsync and nc already installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_cluster_test_deps: need root to apt-get install ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Debian's postinst may try to start the ssh service; there is no init system to start it here,
# and the test runs its own sshd anyway: tell invoke-rc.d not to start services while installing.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
fi
trap 'if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi' EXIT

apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install_cluster_test_deps: installed ${missing[*]}"
