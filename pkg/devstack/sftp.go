package devstack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
)

// SSHDPath is where Debian's openssh-server (deploy/emulators/sftp/install.sh) puts sshd.
const SSHDPath = "/usr/sbin/sshd"

// StartSFTP runs OpenSSH's sshd (installed by `make emulators`) on a free loopback port as the
// current user, serving SFTP to a client key made for it, with the data under dir/data. Target
// is an rclone target (pkg/target/rclone, backend sftp) that logs in with that key and checks
// the server's host key; no secret is needed. Kind is "sftp".
func StartSFTP(ctx context.Context, dir string) (*Cloud, error) {
	if _, err := os.Stat(SSHDPath); err != nil {
		return nil, fmt.Errorf("devstack: %s is not installed (%w): run `make emulators` from the repository root", SSHDPath, err)
	}
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		return nil, fmt.Errorf("devstack: ssh-keygen (openssh-client, installed with openssh-server): %w", err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	data, keys := filepath.Join(dir, "data"), filepath.Join(dir, "keys")
	for _, d := range []string{data, keys} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if os.Geteuid() == 0 {
		// sshd running as root needs its privilege separation directory, which the package's
		// service would create; /run is emptied at boot.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return nil, err
		}
	}
	hostKey, clientKey := filepath.Join(keys, "host_key"), filepath.Join(keys, "client_key")
	for _, k := range []string{hostKey, clientKey} {
		os.Remove(k)
		os.Remove(k + ".pub")
		if out, err := exec.CommandContext(ctx, keygen, "-q", "-t", "ed25519", "-N", "", "-C", "custos-dev", "-f", k).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("devstack: ssh-keygen: %w: %s", err, out)
		}
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		return nil, err
	}
	clientPub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	authorized, knownHosts, cfg := filepath.Join(keys, "authorized_keys"), filepath.Join(keys, "known_hosts"), filepath.Join(dir, "sshd_config")
	fields := strings.Fields(string(hostPub)) // type, key, comment
	files := map[string]string{
		authorized: string(clientPub),
		knownHosts: fmt.Sprintf("[127.0.0.1]:%d %s %s\n", port, fields[0], fields[1]),
		// HOME points at dir so that the user's shell start-up files do not run before each
		// hash command; internal-sftp needs no shell at all.
		cfg: fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %s
AuthorizedKeysFile %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile none
MaxStartups 100
MaxSessions 100
LogLevel ERROR
Subsystem sftp internal-sftp
SetEnv HOME=%s
`, port, hostKey, authorized, dir),
	}
	for p, content := range files {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			return nil, err
		}
	}
	p, err := StartProcess(Spec{Name: "sshd", Path: SSHDPath, Dir: dir, Port: port, Args: []string{"-D", "-e", "-f", cfg}})
	if err != nil {
		return nil, err
	}
	endpoint := fmt.Sprintf("sftp://%s@127.0.0.1:%d%s", u.Username, port, data)
	return &Cloud{
		Process: p, Kind: "sftp", Endpoint: endpoint,
		Target: fmt.Sprintf("    kind: rclone\n    provider: sftp\n    path: %s\n    options:\n      host: 127.0.0.1\n      port: %d\n      user: %s\n      key_file: %s\n      known_hosts_file: %s\n",
			data, port, u.Username, clientKey, knownHosts),
	}, nil
}
