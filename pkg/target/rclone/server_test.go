package rclone_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/net/webdav"

	"github.com/custos-dev/custos/pkg/internal/emulator"
	"github.com/custos-dev/custos/pkg/target/rclone"
)

// Where Debian's openssh-server puts sshd (deploy/emulators/sftp/install.sh).
const sshdPath = "/usr/sbin/sshd"

// sftpServer is a real OpenSSH sshd on a loopback port, serving SFTP (its built-in sftp server)
// and the shell commands rclone hashes with (sha256sum) to one client key, as the user running
// the test.
type sftpServer struct {
	proc       *emulator.Process
	port       int
	user       string
	clientKey  string // path of the client's private key
	knownHosts string // path of a known_hosts file holding the server's host key
	hostKey    string // "ssh-ed25519 AAAA...", the server's public key
	n          atomic.Int64
}

// startSFTP starts sshd for the test. A missing sshd fails the test with the command that
// installs it: it never skips.
func startSFTP(t *testing.T) *sftpServer {
	t.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		t.Fatalf("sftp server: %s is not installed (%v): run `make emulators` from the repository root", sshdPath, err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// sshd running as root insists on its privilege separation directory, which the
		// package's service unit would create; /run is emptied at boot.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	hostPub, _ := writeKey(t, filepath.Join(dir, "host_key"))
	clientPub, clientPriv := writeKey(t, filepath.Join(dir, "client_key"))
	writeFile(t, filepath.Join(dir, "authorized_keys"), clientPub)
	// HOME points at the temporary directory so that the login user's shell start-up files
	// (a slow ~/.bashrc) do not run before every hash command.
	port := emulator.FreePort(t)
	cfg := filepath.Join(dir, "sshd_config")
	writeFile(t, cfg, fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %s
AuthorizedKeysFile %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile none
MaxStartups 200
MaxSessions 200
LogLevel ERROR
Subsystem sftp internal-sftp
SetEnv HOME=%s
`, port, filepath.Join(dir, "host_key"), filepath.Join(dir, "authorized_keys"), dir))
	s := &sftpServer{port: port, user: u.Username, clientKey: clientPriv, hostKey: hostPub,
		knownHosts: filepath.Join(dir, "known_hosts")}
	writeFile(t, s.knownHosts, fmt.Sprintf("[127.0.0.1]:%d %s", port, hostPub))
	s.proc = emulator.Start(t, emulator.Spec{Name: "sshd", Path: sshdPath, Args: []string{"-D", "-e", "-f", cfg}, Dir: dir, Port: port})
	return s
}

// config returns the Config of a target on a fresh, empty directory of the server.
func (s *sftpServer) config(t testing.TB) rclone.Config {
	root := filepath.Join(t.TempDir(), "root")
	return rclone.Config{
		Label:   fmt.Sprintf("sftp-%d", s.n.Add(1)),
		Backend: "sftp",
		Root:    root,
		Options: map[string]string{
			"host": "127.0.0.1", "port": strconv.Itoa(s.port), "user": s.user,
			"key_file": s.clientKey, "known_hosts_file": s.knownHosts,
		},
	}
}

// writeKey writes a fresh ed25519 private key (OpenSSH format) to path and returns the public
// key in authorized_keys form and the path.
func writeKey(t *testing.T, path string) (pub, privPath string) {
	t.Helper()
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(sk, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pk)
	if err != nil {
		t.Fatal(err)
	}
	pub = string(ssh.MarshalAuthorizedKey(sp))
	return pub[:len(pub)-1], path
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// webdavServer is a WebDAV server on a loopback port: golang.org/x/net/webdav, the server that
// rclone's own `serve webdav` is built on, over a directory, behind basic authentication.
type webdavServer struct {
	url, user, pass string
	dir             string
	n               atomic.Int64
	corrupting      atomic.Pointer[func(*http.Request) bool]
}

// corrupt makes the server flip a bit in the body of every request that pred accepts; nil
// stops it.
func (s *webdavServer) corrupt(pred func(*http.Request) bool) {
	if pred == nil {
		s.corrupting.Store(nil)
		return
	}
	s.corrupting.Store(&pred)
}

// flipReader flips the lowest bit of the first byte it reads.
type flipReader struct {
	io.ReadCloser
	done bool
}

func (f *flipReader) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if n > 0 && !f.done {
		p[0] ^= 1
		f.done = true
	}
	return n, err
}

func startWebDAV(t *testing.T) *webdavServer {
	t.Helper()
	s := &webdavServer{user: "custos", pass: "dav-secret-" + strconv.Itoa(os.Getpid()), dir: t.TempDir()}
	h := &webdav.Handler{FileSystem: webdav.Dir(s.dir), LockSystem: webdav.NewMemLS()}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != s.user || p != s.pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="custos"`)
			http.Error(w, "unauthorised", http.StatusUnauthorized)
			return
		}
		if pred := s.corrupting.Load(); pred != nil && (*pred)(r) {
			r.Body = &flipReader{ReadCloser: r.Body}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

// config returns the Config of a target on a fresh, empty collection of the server.
func (s *webdavServer) config(testing.TB) rclone.Config {
	n := s.n.Add(1)
	return rclone.Config{
		Label:   fmt.Sprintf("webdav-%d", n),
		Backend: "webdav",
		Root:    fmt.Sprintf("t%d/custos", n),
		Options: map[string]string{"url": s.url, "vendor": "other", "user": s.user},
		Secrets: map[string]string{"pass": s.pass},
	}
}
