#!/usr/bin/env bash
# Installs the SFTP server that pkg/target/rclone tests run against: OpenSSH's sshd (with its
# built-in SFTP server, internal-sftp) from Debian 12's openssh-server package, pinned. The tests start their own sshd
# on a free loopback port with a temporary configuration, host key and client key; nothing of
# the package's own service is used or started.
#
# Idempotent: does nothing when /usr/sbin/sshd is there. Needs root (or sudo) to
# install. `make emulators` runs this next to other installers that use apt, so every apt call
# waits for the dpkg lock. A policy-rc.d stops the package from starting the system's sshd on
# port 22 while it installs (and is removed afterwards if this script created it).
#
# Run a server by hand as the tests do (as root; replace the paths):
#   ssh-keygen -q -t ed25519 -N '' -f /tmp/sftp/host_key
#   ssh-keygen -q -t ed25519 -N '' -f /tmp/sftp/client_key
#   cp /tmp/sftp/client_key.pub /tmp/sftp/authorized_keys
#   cat >/tmp/sftp/sshd_config <<CONF
#   ListenAddress 127.0.0.1:2222
#   HostKey /tmp/sftp/host_key
#   AuthorizedKeysFile /tmp/sftp/authorized_keys
#   PasswordAuthentication no
#   PermitRootLogin prohibit-password
#   StrictModes no
#   PidFile none
#   Subsystem sftp internal-sftp
#   CONF
#   /usr/sbin/sshd -D -e -f /tmp/sftp/sshd_config
# then point an rclone target (backend sftp) at host 127.0.0.1, port 2222, user root, key_file
# /tmp/sftp/client_key and a known_hosts file holding "[127.0.0.1]:2222 <host_key.pub>".
set -euo pipefail

VERSION="${OPENSSH_SERVER_VERSION:-1:9.2p1-2+deb12u10}"
sshd=/usr/sbin/sshd

installed() { [[ -x "$sshd" ]]; }

if installed; then
	echo "openssh-server already installed: $sshd"
	exit 0
fi

source "$(dirname "${BASH_SOURCE[0]}")/../apt.sh"
apt_root deploy/emulators/sftp/install.sh openssh-server

# Keep the package's maintainer scripts from starting the system sshd.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [[ ! -e "$policy" ]]; then
	printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
	$sudo chmod 755 "$policy"
	made_policy=1
fi
cleanup() { if [[ -n "$made_policy" ]]; then $sudo rm -f "$policy"; fi; }
trap cleanup EXIT

echo "installing openssh-server $VERSION (Debian package)"
apt_install "openssh-server=$VERSION"

if ! installed; then
	echo "deploy/emulators/sftp/install.sh: openssh-server installed but $sshd is missing" >&2
	exit 1
fi
echo "installed openssh-server $VERSION: $sshd"
