package report_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/pkg/report"
)

// chromium finds the headless browser `make emulators` installs (deploy/emulators/chromium).
// In CI (CI set) a missing browser fails the test; elsewhere it skips with a message.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "/usr/bin/chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is missing: run make emulators (deploy/emulators/chromium/install.sh)")
	}
	t.Skip("chromium is missing: run make emulators (deploy/emulators/chromium/install.sh); CI fails here")
	return ""
}

// dumpDOM renders file in headless Chromium and returns the DOM it built.
func dumpDOM(t *testing.T, bin, file string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--dump-dom", "file://"+file)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	return string(out)
}

// The HTML report renders in a real browser: it has the summary and the control table, every
// control is a row, and a failing control's row is in the failing state (class fail, FAIL, and
// the failing colour as the browser computes it).
func TestHTMLInChromium(t *testing.T) {
	bin := chromium(t)
	s := quarterLog(t)
	r, err := report.Build(s.input())
	if err != nil {
		t.Fatal(err)
	}
	var page bytes.Buffer
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	html := page.String()
	for _, banned := range []string{"<script", "<link", "src=", "http://", "https://"} {
		if strings.Contains(html, banned) {
			t.Errorf("the page is not self-contained: it holds %q", banned)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "report.html")
	if err := os.WriteFile(file, page.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	dom := dumpDOM(t, bin, file)
	if !strings.Contains(dom, `<table id="controls">`) || !strings.Contains(dom, "Custos compliance report") ||
		!strings.Contains(dom, `id="summary-counts"`) {
		t.Fatalf("the rendered page lacks the title, the summary or the control table:\n%.2000s", dom)
	}
	rows := regexp.MustCompile(`<tr class="control (pass|fail|not_applicable)" id="([^"]+)"`).FindAllStringSubmatch(dom, -1)
	if len(rows) != len(r.Controls) {
		t.Fatalf("%d control rows rendered, want %d", len(rows), len(r.Controls))
	}
	row := regexp.MustCompile(`(?s)<tr class="control fail" id="seed002-3.4-testing".*?</tr>`).FindString(dom)
	if row == "" || !strings.Contains(row, `<td class="status">FAIL</td>`) || !strings.Contains(row, "no passed drill in 2026-Q4") {
		t.Fatalf("the failing testing control is not rendered failing:\n%s", row)
	}
	if !strings.Contains(dom, "custos audit verify --verifier-key "+s.vkey) || !strings.Contains(dom, "— custos-audit ") {
		t.Errorf("the page lacks the checkpoint or the command that re-verifies it")
	}

	// What the reader sees: the browser's computed style of the failing status cell. The page
	// itself has no script; a copy gets one that writes the computed colours into the DOM.
	probe := strings.Replace(html, "</body>", `<script>
for (const id of ["seed002-3.4-testing", "seed002-3.2-retention"]) {
  const cell = document.getElementById(id).querySelector("td.status");
  const p = document.createElement("p");
  p.id = "probe-" + id;
  p.textContent = getComputedStyle(cell).backgroundColor + "|" + cell.innerText;
  document.body.appendChild(p);
}
</script></body>`, 1)
	file2 := filepath.Join(dir, "probe.html")
	if err := os.WriteFile(file2, []byte(probe), 0o600); err != nil {
		t.Fatal(err)
	}
	dom = dumpDOM(t, bin, file2)
	if !strings.Contains(dom, `<p id="probe-seed002-3.4-testing">rgb(248, 215, 218)|FAIL</p>`) {
		t.Errorf("the failing row is not shown failing (red FAIL):\n%s", regexp.MustCompile(`<p id="probe-[^<]*</p>`).FindAllString(dom, -1))
	}
	if !strings.Contains(dom, `<p id="probe-seed002-3.2-retention">rgb(212, 237, 218)|PASS</p>`) {
		t.Errorf("the passing row is not shown passing (green PASS):\n%s", regexp.MustCompile(`<p id="probe-[^<]*</p>`).FindAllString(dom, -1))
	}
}
