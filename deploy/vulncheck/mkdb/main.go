// Command mkdb turns a folder of Go vulnerability reports in OSV JSON (one <ID>.json per report,
// as in the data/osv folder of the golang.org/x/vulndb module) into a vulnerability database in
// the file layout govulncheck reads with `-db file:///path`:
//
//	index/db.json       {"modified": T}: the newest "modified" of any entry
//	index/modules.json  [{"path": M, "vulns": [{"id", "modified", "fixed"}]}], sorted by path then id
//	index/vulns.json    [{"id", "modified", "aliases"}], sorted by id
//	ID/<ID>.json        the OSV entry itself
//
// It exists because the public database server is out of reach here while the module proxy
// serves golang.org/x/vulndb, whose OSV files hold the same entries. Those files carry a zero
// "modified" (the server stamps it from the repository history on deploy, and a module zip has
// no history); mkdb replaces a zero "modified" with the time of the vulndb commit the files
// come from (-modified, or "Time" of the proxy's .info file given with -info), so the
// database's date says how current it is.
//
// "fixed" in the modules index is only a prefilter (govulncheck skips a report for a module
// whose version is at or past it, then matches the report's own ranges). mkdb errs towards
// leaving it empty, which makes govulncheck read the report: it is empty whenever a range is
// not plain SEMVER introduced/fixed, a version is not valid semver, or the report was
// reintroduced after its newest fix.
//
// Usage (from deploy/vulncheck):
//
//	GOWORK=off go run ./mkdb -osv $(go env GOMODCACHE)/golang.org/x/vulndb@VERSION/data/osv \
//	    -info $(go env GOMODCACHE)/cache/download/golang.org/x/vulndb/@v/VERSION.info -out DIR
//
// DIR must not exist or be empty. mkdb fails on a malformed entry, a file named other than its
// ID, or a result with no entries or no standard-library entries: an empty database would let
// every scan pass.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"golang.org/x/mod/semver"
)

func main() {
	osvDir := flag.String("osv", "", "folder of OSV JSON files named <ID>.json (required)")
	out := flag.String("out", "", "folder to write the database to; must not exist or be empty (required)")
	info := flag.String("info", "", "module proxy .info file of the vulndb version; its Time replaces a zero \"modified\"")
	modified := flag.String("modified", "", "RFC 3339 time that replaces a zero \"modified\" (instead of -info)")
	flag.Parse()
	if *osvDir == "" || *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: mkdb -osv DIR -out DIR [-info FILE | -modified TIME]")
		os.Exit(2)
	}
	fallback, err := fallbackTime(*info, *modified)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdb:", err)
		os.Exit(1)
	}
	st, err := build(*osvDir, *out, fallback)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdb:", err)
		os.Exit(1)
	}
	fmt.Printf("mkdb: %d entries, %d modules, modified %s, written to %s\n",
		st.entries, st.modules, st.modified.Format(time.RFC3339), *out)
}

// fallbackTime returns the time that stands in for a zero "modified", or the zero time when
// neither -info nor -modified is given.
func fallbackTime(infoFile, modified string) (time.Time, error) {
	switch {
	case infoFile != "" && modified != "":
		return time.Time{}, errors.New("give -info or -modified, not both")
	case modified != "":
		t, err := time.Parse(time.RFC3339, modified)
		if err != nil {
			return time.Time{}, fmt.Errorf("-modified: %w", err)
		}
		return t.UTC(), nil
	case infoFile != "":
		b, err := os.ReadFile(infoFile)
		if err != nil {
			return time.Time{}, err
		}
		var v struct{ Version, Time string }
		if err := json.Unmarshal(b, &v); err != nil {
			return time.Time{}, fmt.Errorf("%s: %w", infoFile, err)
		}
		t, err := time.Parse(time.RFC3339, v.Time)
		if err != nil {
			return time.Time{}, fmt.Errorf("%s: Time: %w", infoFile, err)
		}
		return t.UTC(), nil
	}
	return time.Time{}, nil
}

// entry is the part of an OSV entry the indexes need.
type entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases"`
	Affected []struct {
		Package struct {
			Name      string `json:"name"`
			Ecosystem string `json:"ecosystem"`
		} `json:"package"`
		Ranges []osvRange `json:"ranges"`
	} `json:"affected"`
}

type osvRange struct {
	Type   string              `json:"type"`
	Events []map[string]string `json:"events"`
}

type moduleVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Fixed    string    `json:"fixed,omitempty"`
}

type module struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

type vuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
}

type stats struct {
	entries, modules int
	modified         time.Time
}

// The IDs of the Go vulnerability database; anything else in the folder is a mistake.
var idPattern = regexp.MustCompile(`^GO-[0-9]{4}-[0-9]{4,}$`)

func build(osvDir, out string, fallback time.Time) (stats, error) {
	if err := emptyOrMissing(out); err != nil {
		return stats{}, err
	}
	files, err := os.ReadDir(osvDir)
	if err != nil {
		return stats{}, err
	}
	if err := os.MkdirAll(filepath.Join(out, "ID"), 0o755); err != nil {
		return stats{}, err
	}
	if err := os.MkdirAll(filepath.Join(out, "index"), 0o755); err != nil {
		return stats{}, err
	}

	var (
		dbModified time.Time
		vulns      []vuln
		modules    = map[string]map[string]moduleVuln{} // module path -> ID -> index record
	)
	for _, f := range files {
		name := f.Name()
		if f.IsDir() || filepath.Ext(name) != ".json" {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(osvDir, name))
		if err != nil {
			return stats{}, err
		}
		var e entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return stats{}, fmt.Errorf("%s: %w", name, err)
		}
		if !idPattern.MatchString(e.ID) || name != e.ID+".json" {
			return stats{}, fmt.Errorf("%s: holds entry %q: want files named <GO-YYYY-NNNN>.json after their id", name, e.ID)
		}
		if len(e.Affected) == 0 {
			return stats{}, fmt.Errorf("%s: no affected modules", name)
		}
		if e.Modified.IsZero() && !fallback.IsZero() {
			e.Modified = fallback
			if raw, err = setModified(raw, fallback); err != nil {
				return stats{}, fmt.Errorf("%s: %w", name, err)
			}
		}
		if e.Modified.After(dbModified) {
			dbModified = e.Modified
		}
		if err := os.WriteFile(filepath.Join(out, "ID", name), raw, 0o644); err != nil {
			return stats{}, err
		}
		vulns = append(vulns, vuln{ID: e.ID, Modified: e.Modified, Aliases: e.Aliases})

		for _, a := range e.Affected {
			path := a.Package.Name
			if path == "" || a.Package.Ecosystem != "Go" {
				return stats{}, fmt.Errorf("%s: affected package %q in ecosystem %q: want a Go module path", name, path, a.Package.Ecosystem)
			}
			fixed := latestFix(a.Ranges)
			byID := modules[path]
			if byID == nil {
				byID = map[string]moduleVuln{}
				modules[path] = byID
			}
			if prev, ok := byID[e.ID]; ok {
				// Several affected blocks name the same module: keep the prefilter that lets
				// through every version either block does.
				fixed = looserFix(prev.Fixed, fixed)
			}
			byID[e.ID] = moduleVuln{ID: e.ID, Modified: e.Modified, Fixed: fixed}
		}
	}
	if len(vulns) == 0 {
		return stats{}, fmt.Errorf("%s: no OSV entries", osvDir)
	}
	if len(modules["stdlib"]) == 0 || len(modules["toolchain"]) == 0 {
		return stats{}, fmt.Errorf("%s: no entries for the standard library or the toolchain: not the Go vulnerability database?", osvDir)
	}

	sort.Slice(vulns, func(i, j int) bool { return vulns[i].ID < vulns[j].ID })
	index := make([]module, 0, len(modules))
	for path, byID := range modules {
		m := module{Path: path}
		for _, v := range byID {
			m.Vulns = append(m.Vulns, v)
		}
		sort.Slice(m.Vulns, func(i, j int) bool { return m.Vulns[i].ID < m.Vulns[j].ID })
		index = append(index, m)
	}
	sort.Slice(index, func(i, j int) bool { return index[i].Path < index[j].Path })

	for name, v := range map[string]any{
		"db.json": struct {
			Modified time.Time `json:"modified"`
		}{dbModified},
		"modules.json": index,
		"vulns.json":   vulns,
	} {
		b, err := json.Marshal(v)
		if err != nil {
			return stats{}, err
		}
		if err := os.WriteFile(filepath.Join(out, "index", name), b, 0o644); err != nil {
			return stats{}, err
		}
	}
	return stats{entries: len(vulns), modules: len(index), modified: dbModified}, nil
}

// emptyOrMissing fails unless dir is absent or an empty folder, so a database is never a mix of
// two builds.
func emptyOrMissing(dir string) error {
	des, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(des) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	}
	return nil
}

// setModified returns the entry with its top-level "modified" set to t. The other fields keep
// their JSON text; the keys come out sorted.
func setModified(raw []byte, t time.Time) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, err
	}
	m, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	fields["modified"] = m
	return json.MarshalIndent(fields, "", "  ")
}

// latestFix returns the newest version that fixes the report for one affected module, without
// the "v" prefix, or "" when there is none or it cannot be told for sure.
func latestFix(ranges []osvRange) string {
	latest := ""
	var introduced []string
	for _, r := range ranges {
		if r.Type != "SEMVER" {
			return ""
		}
		for _, ev := range r.Events {
			for kind, v := range ev {
				if !semver.IsValid(canon(v)) && !(kind == "introduced" && v == "0") {
					return ""
				}
				switch kind {
				case "fixed":
					if latest == "" || semver.Compare(canon(v), canon(latest)) > 0 {
						latest = v
					}
				case "introduced":
					introduced = append(introduced, v)
				default: // last_affected, limit: not a fix
					return ""
				}
			}
		}
	}
	if latest == "" {
		return ""
	}
	for _, v := range introduced {
		if v != "0" && semver.Compare(canon(v), canon(latest)) > 0 {
			return "" // vulnerable again after the newest fix
		}
	}
	return latest
}

// looserFix combines two prefilters for one module: "" (read the report whatever the version)
// wins, else the newer fix.
func looserFix(a, b string) string {
	if a == "" || b == "" {
		return ""
	}
	if semver.Compare(canon(a), canon(b)) >= 0 {
		return a
	}
	return b
}

// canon turns an OSV version ("1.2.3") into the form golang.org/x/mod/semver takes ("v1.2.3").
func canon(v string) string {
	return "v" + strings.TrimPrefix(v, "v")
}
