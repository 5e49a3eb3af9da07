package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLatestFix(t *testing.T) {
	semverRange := func(events ...map[string]string) osvRange {
		return osvRange{Type: "SEMVER", Events: events}
	}
	intro := func(v string) map[string]string { return map[string]string{"introduced": v} }
	fix := func(v string) map[string]string { return map[string]string{"fixed": v} }
	for _, tc := range []struct {
		name   string
		ranges []osvRange
		want   string
	}{
		{"one fix", []osvRange{semverRange(intro("0"), fix("1.2.3"))}, "1.2.3"},
		{"newest of several", []osvRange{semverRange(intro("0"), fix("1.21.5"), intro("1.22.0"), fix("1.22.1"))}, "1.22.1"},
		{"across ranges", []osvRange{semverRange(intro("0"), fix("1.10.0")), semverRange(intro("2.0.0"), fix("2.0.4"))}, "2.0.4"},
		{"no fix", []osvRange{semverRange(intro("0"))}, ""},
		{"reintroduced after the fix", []osvRange{semverRange(intro("0"), fix("1.0.1"), intro("1.1.0"))}, ""},
		{"pseudo-version", []osvRange{semverRange(intro("0"), fix("0.0.0-20260626085133-7cb96ac80a6d"))}, "0.0.0-20260626085133-7cb96ac80a6d"},
		{"last_affected is no fix", []osvRange{semverRange(intro("0"), map[string]string{"last_affected": "1.0.0"})}, ""},
		{"not semver", []osvRange{{Type: "GIT", Events: []map[string]string{fix("abc123")}}}, ""},
		{"bad version", []osvRange{semverRange(intro("0"), fix("1.x"))}, ""},
		{"no ranges", nil, ""},
	} {
		if got := latestFix(tc.ranges); got != tc.want {
			t.Errorf("%s: latestFix = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestLooserFix(t *testing.T) {
	for _, tc := range []struct{ a, b, want string }{
		{"1.0.0", "2.0.0", "2.0.0"},
		{"2.0.0", "1.0.0", "2.0.0"},
		{"", "1.0.0", ""},
		{"1.0.0", "", ""},
	} {
		if got := looserFix(tc.a, tc.b); got != tc.want {
			t.Errorf("looserFix(%q, %q) = %q, want %q", tc.a, tc.b, got, tc.want)
		}
	}
}

const stdlibEntry = `{
  "schema_version": "1.3.1",
  "id": "GO-2026-0001",
  "modified": "0001-01-01T00:00:00Z",
  "aliases": ["CVE-2026-0001"],
  "affected": [
    {"package": {"name": "stdlib", "ecosystem": "Go"},
     "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.25.9"}, {"introduced": "1.26.0-0"}, {"fixed": "1.26.9"}]}]},
    {"package": {"name": "toolchain", "ecosystem": "Go"},
     "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.26.9"}]}]}
  ]
}`

const moduleEntry = `{
  "id": "GO-2026-0002",
  "modified": "2026-03-04T05:06:07Z",
  "affected": [
    {"package": {"name": "example.com/m", "ecosystem": "Go"},
     "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.4.0"}]}]},
    {"package": {"name": "example.com/m", "ecosystem": "Go"},
     "ranges": [{"type": "SEMVER", "events": [{"introduced": "2.0.0"}]}]}
  ]
}`

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestBuild(t *testing.T) {
	src := writeFiles(t, map[string]string{
		"GO-2026-0001.json": stdlibEntry,
		"GO-2026-0002.json": moduleEntry,
		"README.md":         "not an entry",
	})
	out := filepath.Join(t.TempDir(), "db")
	snapshot := time.Date(2026, 11, 5, 23, 49, 57, 0, time.UTC)
	st, err := build(src, out, snapshot)
	if err != nil {
		t.Fatal(err)
	}
	if st.entries != 2 || st.modules != 3 || !st.modified.Equal(snapshot) {
		t.Errorf("stats = %+v, want 2 entries, 3 modules, modified %v", st, snapshot)
	}

	var db struct{ Modified time.Time }
	readJSON(t, filepath.Join(out, "index", "db.json"), &db)
	if !db.Modified.Equal(snapshot) {
		t.Errorf("db.json modified = %v, want the newest entry's %v", db.Modified, snapshot)
	}

	var modules []module
	readJSON(t, filepath.Join(out, "index", "modules.json"), &modules)
	got := map[string]moduleVuln{}
	var order []string
	for _, m := range modules {
		order = append(order, m.Path)
		for _, v := range m.Vulns {
			got[m.Path+" "+v.ID] = v
		}
	}
	if strings.Join(order, ",") != "example.com/m,stdlib,toolchain" {
		t.Errorf("modules in order %v, want sorted by path", order)
	}
	if v := got["stdlib GO-2026-0001"]; v.Fixed != "1.26.9" || !v.Modified.Equal(snapshot) {
		t.Errorf("stdlib GO-2026-0001 = %+v, want fixed 1.26.9, zero modified replaced", v)
	}
	if v := got["example.com/m GO-2026-0002"]; v.Fixed != "" || !v.Modified.Equal(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)) {
		t.Errorf("example.com/m GO-2026-0002 = %+v, want one record, no fix (2.x never fixed), own modified", v)
	}

	var vulns []vuln
	readJSON(t, filepath.Join(out, "index", "vulns.json"), &vulns)
	if len(vulns) != 2 || vulns[0].ID != "GO-2026-0001" || vulns[0].Aliases[0] != "CVE-2026-0001" {
		t.Errorf("vulns.json = %+v", vulns)
	}

	var e entry
	readJSON(t, filepath.Join(out, "ID", "GO-2026-0001.json"), &e)
	if e.ID != "GO-2026-0001" || !e.Modified.Equal(snapshot) || len(e.Affected) != 2 {
		t.Errorf("ID/GO-2026-0001.json = %+v, want the entry with modified %v", e, snapshot)
	}
	kept, err := os.ReadFile(filepath.Join(out, "ID", "GO-2026-0002.json"))
	if err != nil || string(kept) != moduleEntry {
		t.Errorf("an entry with its own modified is copied as it is: got %q, %v", kept, err)
	}

	if _, err := build(src, out, snapshot); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("second build into the same folder: err = %v, want 'not empty'", err)
	}
}

func TestBuildRejects(t *testing.T) {
	for name, files := range map[string]map[string]string{
		"no entries":          {"README.md": "x"},
		"no stdlib":           {"GO-2026-0002.json": moduleEntry},
		"file not named ID":   {"GO-2026-0001.json": stdlibEntry, "GO-2026-0003.json": moduleEntry},
		"malformed":           {"GO-2026-0001.json": stdlibEntry, "GO-2026-0002.json": "{"},
		"no affected modules": {"GO-2026-0001.json": stdlibEntry, "GO-2026-0002.json": `{"id": "GO-2026-0002"}`},
	} {
		if _, err := build(writeFiles(t, files), filepath.Join(t.TempDir(), "db"), time.Time{}); err == nil {
			t.Errorf("%s: build succeeded, want an error", name)
		}
	}
}

func TestFallbackTime(t *testing.T) {
	info := filepath.Join(t.TempDir(), "v.info")
	if err := os.WriteFile(info, []byte(`{"Version":"v0.0.0-20261105234957-e22db6528018","Time":"2026-11-05T23:49:57Z"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 11, 5, 23, 49, 57, 0, time.UTC)
	if got, err := fallbackTime(info, ""); err != nil || !got.Equal(want) {
		t.Errorf("fallbackTime(-info) = %v, %v; want %v", got, err, want)
	}
	if got, err := fallbackTime("", "2026-11-05T23:49:57Z"); err != nil || !got.Equal(want) {
		t.Errorf("fallbackTime(-modified) = %v, %v; want %v", got, err, want)
	}
	if _, err := fallbackTime(info, "2026-11-05T23:49:57Z"); err == nil {
		t.Error("fallbackTime with both: want an error")
	}
	if got, err := fallbackTime("", ""); err != nil || !got.IsZero() {
		t.Errorf("fallbackTime() = %v, %v; want the zero time", got, err)
	}
}
