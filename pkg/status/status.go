// Package status builds the status page of a single-machine Custos (`custos server`): each class
// with its RPO and last backup, replica health, the latest restore drills, dead letters and
// running snapshot jobs. It is plain HTML with no script and no login, so Handler answers only
// clients on the loopback interface.
package status

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/policy"
	"github.com/custos-dev/custos/pkg/rpo"
	"github.com/custos-dev/custos/pkg/snapshot"
)

// Page is what the status page shows. Nothing on it names a customer.
type Page struct {
	Generated time.Time
	Classes   []Class
	Targets   []Target
	Drills    []Drill
	// DeadLetters is how many messages the dead-letter stream holds.
	DeadLetters uint64
	Jobs        []Job
	// Problems are the parts that could not be read (the page shows the rest).
	Problems []string
}

// Class is one data class.
type Class struct {
	Name string
	RPO  time.Duration
	// LastBackup is when its newest backup was committed; zero when it has none.
	LastBackup time.Time
	Age        time.Duration
	Breached   bool
	// Packs is how many packs the index holds for it; Underreplicated how many of them are on
	// fewer targets than the class names.
	Packs           int
	Underreplicated int
}

// Target is one storage target, as the index sees it.
type Target struct {
	Name  string
	Packs int
}

// Drill is the latest drill of one class from one target.
type Drill struct {
	Class, Target, Outcome, Reason string
	Time                           time.Time
	Estimated, RTO                 time.Duration
}

// Job is a snapshot job that is not committed or failed.
type Job struct {
	ID, Class, Trigger string
	Tasks              int
	Created            time.Time
}

// Sources are what Collect reads.
type Sources struct {
	Policy    *policy.Policy
	Index     rpo.Index
	Snapshots *snapshot.Store
	// JS reads the dead-letter stream and the audit log; nil leaves them out.
	JS    jetstream.JetStream
	Clock func() time.Time
	// ClassTargets are the targets of each class as the index names them (config.TargetNames:
	// "fs:primary"); the policy's names when nil. Targets are every configured target, so one
	// that holds nothing yet is listed too.
	ClassTargets map[string][]string
	Targets      []string
}

// Collect gathers the page. A part that cannot be read is named in Problems; Collect fails only
// when the context ends.
func Collect(ctx context.Context, s Sources) (Page, error) {
	now := time.Now
	if s.Clock != nil {
		now = s.Clock
	}
	pg := Page{Generated: now().UTC()}
	problem := func(what string, err error) { pg.Problems = append(pg.Problems, what+": "+err.Error()) }
	packs, err := s.Index.Packs(ctx)
	if err != nil {
		problem("index", err)
	}
	all := packs
	if s.Snapshots != nil {
		// Every class's snapshots in one read; rpo.Compute sorts them out by class.
		if snaps, err := s.Snapshots.List(ctx, ""); err != nil {
			problem("snapshots", err)
		} else {
			all = rpo.WithSnapshots(all, snaps)
		}
	}
	perTarget := map[string]int{}
	for _, st := range rpo.Compute(s.Policy, all, pg.Generated) {
		c := Class{Name: st.Class, RPO: st.RPO, LastBackup: st.Newest, Age: st.Age, Breached: st.Breached}
		want := s.ClassTargets[st.Class]
		if want == nil {
			if pc := s.Policy.Class(st.Class); pc != nil {
				want = pc.Targets
			}
		}
		for _, p := range packs {
			if p.Class != st.Class {
				continue
			}
			c.Packs++
			n := 0
			for _, t := range want {
				if slices.Contains(p.Targets, t) {
					n++
				}
			}
			if n < len(want) {
				c.Underreplicated++
			}
		}
		pg.Classes = append(pg.Classes, c)
	}
	for _, p := range packs {
		for _, t := range p.Targets {
			perTarget[t]++
		}
	}
	for _, t := range s.Targets {
		perTarget[t] += 0
	}
	for name, n := range perTarget {
		pg.Targets = append(pg.Targets, Target{Name: name, Packs: n})
	}
	sort.Slice(pg.Targets, func(i, j int) bool { return pg.Targets[i].Name < pg.Targets[j].Name })
	if s.Snapshots != nil {
		jobs, err := s.Snapshots.Jobs(ctx)
		if err != nil {
			problem("jobs", err)
		}
		for _, j := range jobs {
			if j.Failed != "" {
				continue
			}
			if _, err := s.Snapshots.Get(ctx, j.ID); err == nil {
				continue // committed
			}
			pg.Jobs = append(pg.Jobs, Job{ID: j.ID, Class: j.Class, Trigger: j.Trigger, Tasks: len(j.Tasks), Created: j.Created})
		}
	}
	if s.JS != nil {
		if st, err := s.JS.Stream(ctx, event.DLQStreamName); err == nil {
			pg.DeadLetters = st.CachedInfo().State.Msgs
		} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
			problem("dead letters", err)
		}
		entries, err := audit.ListKind(ctx, s.JS, audit.KindDrill)
		if err != nil {
			problem("audit log", err)
		}
		pg.Drills = latestDrills(entries)
	}
	return pg, ctx.Err()
}

// latestDrills keeps the newest drill entry of each class and target.
func latestDrills(entries []audit.Entry) []Drill {
	latest := map[[2]string]Drill{}
	for _, e := range entries {
		if e.Kind != audit.KindDrill {
			continue
		}
		for _, t := range e.Targets {
			d := Drill{Class: e.Class, Target: t, Outcome: e.Outcome, Reason: e.Reason, Time: e.Time}
			if f := e.Figures; f != nil {
				d.Estimated = time.Duration(f.EstimatedSeconds * float64(time.Second))
				d.RTO = time.Duration(f.RTOSeconds * float64(time.Second))
			}
			if k := [2]string{e.Class, t}; !d.Time.Before(latest[k].Time) {
				latest[k] = d
			}
		}
	}
	out := make([]Drill, 0, len(latest))
	for _, d := range latest {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Class != out[j].Class {
			return out[i].Class < out[j].Class
		}
		return out[i].Target < out[j].Target
	})
	return out
}

var page = template.Must(template.New("status").Funcs(template.FuncMap{
	"dur": func(d time.Duration) string {
		if d == 0 {
			return "-"
		}
		return policy.FormatDuration(d.Round(time.Second))
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format(time.RFC3339)
	},
}).Parse(pageHTML))

// Render writes the page as HTML.
func Render(w io.Writer, p Page) error { return page.Execute(w, p) }

// Handler serves the page at every path it is mounted on. It answers only loopback clients:
// the page has no login.
func Handler(collect func(context.Context) (Page, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopback(r.RemoteAddr) {
			http.Error(w, "the status page answers only on the loopback interface", http.StatusForbidden)
			return
		}
		p, err := collect(r.Context())
		if err != nil {
			http.Error(w, fmt.Sprintf("status: %v", err), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = Render(w, p) // the client went away
	})
}

func loopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

const pageHTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Custos status</title>
<meta http-equiv="refresh" content="30">
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:2em}
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left}
th{background:#f4f4f4}
.ok{background:#e8f6e8}
.breached,.failed{background:#fbe3e3;font-weight:bold}
.warn{background:#fff4d6}
</style></head><body>
<h1>Custos status</h1>
<p>Generated {{when .Generated}}. Refreshes every 30 s.</p>
{{range .Problems}}<p class="warn">Could not read {{.}}</p>{{end}}
<h2>Classes</h2>
<table id="classes"><thead><tr><th>class</th><th>state</th><th>last backup</th><th>age</th><th>RPO</th><th>packs</th><th>under-replicated</th></tr></thead><tbody>
{{range .Classes}}<tr class="{{if .Breached}}breached{{else}}ok{{end}}" data-class="{{.Name}}"><td>{{.Name}}</td><td>{{if .Breached}}BREACHED{{else}}ok{{end}}</td><td>{{when .LastBackup}}</td><td>{{dur .Age}}</td><td>{{dur .RPO}}</td><td>{{.Packs}}</td><td{{if .Underreplicated}} class="warn"{{end}}>{{.Underreplicated}}</td></tr>
{{end}}</tbody></table>
<h2>Targets</h2>
<table id="targets"><thead><tr><th>target</th><th>packs held</th></tr></thead><tbody>
{{range .Targets}}<tr><td>{{.Name}}</td><td>{{.Packs}}</td></tr>
{{end}}</tbody></table>
<h2>Restore drills</h2>
{{if .Drills}}<table id="drills"><thead><tr><th>class</th><th>target</th><th>when</th><th>outcome</th><th>estimated full restore</th><th>RTO</th><th>reason</th></tr></thead><tbody>
{{range .Drills}}<tr class="{{if eq .Outcome "passed"}}ok{{else}}failed{{end}}"><td>{{.Class}}</td><td>{{.Target}}</td><td>{{when .Time}}</td><td>{{.Outcome}}</td><td>{{dur .Estimated}}</td><td>{{dur .RTO}}</td><td>{{.Reason}}</td></tr>
{{end}}</tbody></table>{{else}}<p>No drill recorded yet.</p>{{end}}
<h2>Dead letters</h2>
<p id="dead-letters" class="{{if .DeadLetters}}warn{{else}}ok{{end}}">{{.DeadLetters}} in the dead-letter stream (<code>custos dlq</code>).</p>
<h2>Running jobs</h2>
{{if .Jobs}}<table id="jobs"><thead><tr><th>job</th><th>class</th><th>trigger</th><th>tasks</th><th>created</th></tr></thead><tbody>
{{range .Jobs}}<tr><td>{{.ID}}</td><td>{{.Class}}</td><td>{{.Trigger}}</td><td>{{.Tasks}}</td><td>{{when .Created}}</td></tr>
{{end}}</tbody></table>{{else}}<p>No snapshot job running.</p>{{end}}
</body></html>
`
