# Sourced by the installers of Debian packages (chromium, softhsm, sftp): one way to get root and
# to install pinned package versions.
#
#   apt_root "$0" what     sets $sudo ("" when root, "sudo" when available), or exits naming
#                          the script and what it needed root for
#   apt_install pkg=ver... installs exactly those versions; every apt call waits for the dpkg
#                          lock (make emulators runs the installers side by side), and the
#                          package lists are refreshed once only when a version is not in them

apt_root() {
	sudo=""
	if [[ "$(id -u)" != 0 ]]; then
		if command -v sudo >/dev/null; then sudo="sudo"; else
			echo "$1: $2 is missing and installing it needs root" >&2
			exit 1
		fi
	fi
}

apt_install() {
	export DEBIAN_FRONTEND=noninteractive
	local apt=($sudo apt-get -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
	if ! "${apt[@]}" install "$@" >/dev/null; then
		"${apt[@]}" update
		"${apt[@]}" install "$@" >/dev/null
	fi
}
