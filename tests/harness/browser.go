package harness

import (
	"context"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago, for a server a test starts
// with its address on the command line.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ChromiumDOM renders url in headless Chromium (Debian's, installed by make emulators) and
// returns the DOM after the page loaded: what a person would see, as HTML. A missing Chromium
// fails the test.
func ChromiumDOM(t testing.TB, url string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		bin = "/usr/bin/chromium"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("chromium is not installed (make emulators installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--user-data-dir="+t.TempDir(), "--dump-dom", url).Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	return string(out)
}
