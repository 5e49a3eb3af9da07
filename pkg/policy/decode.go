package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/custos-dev/custos/pkg/internal/pattern"
)

// Parse parses and checks a policy. file names the source in errors ("policy.yaml"). On any
// problem it returns a nil Policy and every *Error found, joined with errors.Join and sorted by
// position; Errors splits them again.
func Parse(file string, data []byte) (*Policy, error) {
	d := &decoder{file: file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.failAt(1, 1, RuleRequired, "the policy file is empty")
		} else {
			d.syntax(err)
		}
		return nil, d.result()
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.fail(&extra, RuleSyntax, "a policy file holds one YAML document; found a second one")
	} else if !errors.Is(err, io.EOF) {
		d.syntax(err)
	}
	var p *Policy
	if len(doc.Content) == 0 {
		d.failAt(1, 1, RuleRequired, "the policy file is empty")
	} else {
		p = d.policy(doc.Content[0])
	}
	if err := d.result(); err != nil {
		return nil, err
	}
	p.Warnings = d.warns
	return p, nil
}

type decoder struct {
	file  string
	errs  []*Error
	warns []*Error
	// targetsOK is false when a target had an error: 3-2-1 is then not checked, as its verdict
	// would only echo that error.
	targetsOK bool
}

func (d *decoder) result() error {
	if len(d.errs) == 0 {
		return nil
	}
	sortByPosition(d.errs)
	errs := make([]error, len(d.errs))
	for i, e := range d.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

func sortByPosition(es []*Error) {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Line != es[j].Line {
			return es[i].Line < es[j].Line
		}
		return es[i].Column < es[j].Column
	})
}

func (d *decoder) failAt(line, col int, rule, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Column: col, Rule: rule, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) fail(n *yaml.Node, rule, format string, args ...any) {
	d.failAt(n.Line, n.Column, rule, format, args...)
}

func (d *decoder) warn(n *yaml.Node, rule, format string, args ...any) {
	d.warns = append(d.warns, &Error{File: d.file, Line: n.Line, Column: n.Column, Rule: rule, Msg: fmt.Sprintf(format, args...)})
}

var yamlLine = pattern.Lazy(`line (\d+)`)

// parserProblems are the YAML parser's (not scanner's) messages. The YAML library reports their
// line 0-based, unlike every other position it gives.
var parserProblems = []string{
	"did not find expected <stream-start>", "did not find expected <document start>",
	"found undefined tag handle", "did not find expected node content",
	"did not find expected '-' indicator", "did not find expected key",
	"did not find expected ',' or ']'", "did not find expected ',' or '}'",
	"found duplicate %YAML directive", "found incompatible YAML document", "found duplicate %TAG directive",
}

// syntax reports a YAML parse error at the line the parser names.
func (d *decoder) syntax(err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLine().FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = strings.TrimPrefix(strings.TrimPrefix(msg, m[0]), ": ")
		if slices.Contains(parserProblems, msg) {
			line++
		}
	}
	d.failAt(line, 0, RuleSyntax, "%s", msg)
}

// field is one key: value pair of a mapping.
type field struct{ key, val *yaml.Node }

// mapping is a decoded mapping node: its known fields by key, and the node itself for errors
// about missing keys.
type mapping struct {
	node   *yaml.Node
	key    *yaml.Node // the key the mapping is the value of, if any: where missing keys are reported
	where  string
	fields map[string]field
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// mapping checks that n is a mapping whose keys are all among known, each at most once.
func (d *decoder) mapping(n *yaml.Node, where string, known ...string) mapping {
	n = resolve(n)
	m := mapping{node: n, where: where, fields: map[string]field{}}
	if n.Kind != yaml.MappingNode {
		if !isNull(n) {
			d.fail(n, RuleType, "%sexpected a mapping (key: value lines), found %s", where, describe(n))
		}
		return m
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		switch {
		case k.Kind != yaml.ScalarNode:
			d.fail(k, RuleType, "%skeys must be plain names, found %s", where, describe(k))
		case !slices.Contains(known, k.Value):
			d.fail(k, RuleUnknownKey, "%sunknown key %q (known keys: %s)", where, k.Value, strings.Join(sorted(known), ", "))
		default:
			if prev, dup := m.fields[k.Value]; dup {
				d.fail(k, RuleDuplicateKey, "%skey %q is already set on line %d", where, k.Value, prev.key.Line)
				continue
			}
			m.fields[k.Value] = field{k, v}
		}
	}
	return m
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "a document"
}

// get returns the value of key, or nil when it is absent or null. A required key that is absent
// is reported at the mapping (or at the key, when it is present but empty).
func (d *decoder) get(m mapping, key string, required bool) *yaml.Node {
	f, ok := m.fields[key]
	if ok && !isNull(f.val) {
		return f.val
	}
	if required && m.node.Kind == yaml.MappingNode {
		d.fail(m.keyNode(key), RuleRequired, "%s%s is required", m.where, key)
	}
	return nil
}

// keyNode returns the key node of key or, when the key is absent, the node naming the mapping.
func (m mapping) keyNode(key string) *yaml.Node {
	if f, ok := m.fields[key]; ok {
		return f.key
	}
	if m.key != nil {
		return m.key
	}
	return m.node
}

func (d *decoder) scalar(m mapping, key string, required bool) (string, *yaml.Node) {
	n := d.get(m, key, required)
	if n == nil {
		return "", nil
	}
	if n.Kind != yaml.ScalarNode {
		d.fail(n, RuleType, "%s%s: expected a single value, found %s", m.where, key, describe(n))
		return "", nil
	}
	return n.Value, n
}

func (d *decoder) str(m mapping, key string, required bool) (string, *yaml.Node) {
	s, n := d.scalar(m, key, required)
	if n != nil && strings.TrimSpace(s) == "" && required {
		d.fail(n, RuleRequired, "%s%s must not be empty", m.where, key)
	}
	return s, n
}

func (d *decoder) integer(m mapping, key string, required bool) (int, *yaml.Node) {
	s, n := d.scalar(m, key, required)
	if n == nil {
		return 0, nil
	}
	var v int
	if n.Tag != "!!int" || n.Decode(&v) != nil {
		d.fail(n, RuleType, "%s%s: expected a whole number, found %q", m.where, key, s)
		return 0, nil
	}
	return v, n
}

func (d *decoder) boolean(m mapping, key string) (bool, *yaml.Node) {
	s, n := d.scalar(m, key, false)
	if n == nil {
		return false, nil
	}
	var v bool
	if n.Tag != "!!bool" || n.Decode(&v) != nil {
		d.fail(n, RuleType, "%s%s: expected true or false, found %q", m.where, key, s)
		return false, nil
	}
	return v, n
}

// duration returns a duration value and its text as written.
func (d *decoder) duration(m mapping, key string) (time.Duration, string, *yaml.Node) {
	s, n := d.scalar(m, key, false)
	if n == nil {
		return 0, "", nil
	}
	v, err := ParseDuration(s)
	if err != nil {
		d.fail(n, RuleDuration, "%s%s: %v", m.where, key, err)
		return 0, s, nil
	}
	return v, s, n
}

// requiredDuration is duration for a key that must be present and positive; rule is the rule a
// missing or zero value breaks, help what the key means.
func (d *decoder) requiredDuration(m mapping, key, rule, help string) (time.Duration, string) {
	v, text, n := d.duration(m, key)
	f, present := m.fields[key]
	switch {
	case !present || isNull(f.val):
		d.fail(m.keyNode(key), rule, "%s%s (%s) is required", m.where, key, help)
	case n != nil && v <= 0:
		d.fail(n, rule, "%s%s must be longer than 0 (%s)", m.where, key, help)
	}
	return v, text
}

// list returns the items of a sequence value.
func (d *decoder) list(m mapping, key string, required bool) ([]*yaml.Node, *yaml.Node) {
	n := d.get(m, key, required)
	if n == nil {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(n, RuleType, "%s%s: expected a list, found %s", m.where, key, describe(n))
		return nil, nil
	}
	if len(n.Content) == 0 && required {
		d.fail(n, RuleRequired, "%s%s must not be empty", m.where, key)
	}
	items := make([]*yaml.Node, len(n.Content))
	for i, it := range n.Content {
		items[i] = resolve(it)
	}
	return items, n
}

// names returns a list of names (e.g. targets: [a, b]) with the node of each.
func (d *decoder) names(m mapping, key string, required bool) ([]string, []*yaml.Node, *yaml.Node) {
	items, n := d.list(m, key, required)
	var out []string
	var nodes []*yaml.Node
	for _, it := range items {
		if it.Kind != yaml.ScalarNode || isNull(it) {
			d.fail(it, RuleType, "%s%s: expected names, found %s", m.where, key, describe(it))
			continue
		}
		out = append(out, it.Value)
		nodes = append(nodes, it)
	}
	return out, nodes, n
}

var (
	namePattern   = pattern.Lazy(`^[a-z][a-z0-9_-]{0,31}$`)
	tenantPattern = pattern.Lazy(`^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$`)
)

// checkName reports a malformed name. Names end up in event ids and NATS KV keys
// (tick.<tenant>.<class>.<schedule>.<unix>), hence the short, dot-free alphabet.
func (d *decoder) checkName(n *yaml.Node, what, name string) bool {
	if namePattern().MatchString(name) {
		return true
	}
	d.fail(n, RuleName, "%s name %q must be 1 to 32 lowercase letters, digits, '_' or '-', starting with a letter", what, name)
	return false
}

func (d *decoder) location(m mapping, key string, def *time.Location) *time.Location {
	s, n := d.str(m, key, false)
	if n == nil {
		return def
	}
	if s == "Local" {
		d.fail(n, RuleTimezone, "%s%s: \"Local\" differs from machine to machine; name the zone (e.g. Europe/Berlin, UTC)", m.where, key)
		return def
	}
	loc, err := time.LoadLocation(s)
	if err != nil || s == "" {
		d.fail(n, RuleTimezone, "%s%s: unknown time zone %q (use an IANA name such as UTC or Europe/Berlin)", m.where, key, s)
		return def
	}
	return loc
}

// parseDate accepts YYYY-MM-DD (00:00 in loc) or an RFC 3339 time.
func parseDate(s string, loc *time.Location) (time.Time, error) {
	if t, err := time.ParseInLocation(time.DateOnly, s, loc); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a date (YYYY-MM-DD) nor an RFC 3339 time (2027-05-25T09:00:00Z)", s)
	}
	return t, nil
}

var rootKeys = []string{"version", "tenant", "effective", "timezone", "catch_up", "fiscal_year_start_month", "targets", "classes", "deadlines"}

func (d *decoder) policy(root *yaml.Node) *Policy {
	p := &Policy{File: d.file, Location: time.UTC, CatchUp: DefaultCatchUp, FiscalYearStartMonth: time.January}
	m := d.mapping(root, "", rootKeys...)
	if root = resolve(root); root.Kind != yaml.MappingNode {
		return p
	}
	if v, n := d.integer(m, "version", true); n != nil && v != 1 {
		d.fail(n, RuleVersion, "version %d is not supported (this Custos reads version 1)", v)
	} else {
		p.Version = v
	}
	if s, n := d.str(m, "tenant", true); n != nil && s != "" {
		if !tenantPattern().MatchString(s) {
			d.fail(n, RuleName, "tenant %q must be 1 to 32 letters, digits, '_' or '-'", s)
		}
		p.Tenant = s
	}
	p.Location = d.location(m, "timezone", time.UTC)
	if s, n := d.scalar(m, "effective", false); n != nil {
		t, err := time.ParseInLocation(time.DateOnly, s, p.Location)
		if err != nil {
			d.fail(n, RuleDate, "effective: %q is not a date (YYYY-MM-DD)", s)
		}
		p.Effective = t
	}
	if v, _, n := d.duration(m, "catch_up"); n != nil {
		if v <= 0 {
			d.fail(n, RuleCatchUp, "catch_up must be longer than 0 (it is how late a missed tick may still fire)")
		} else {
			p.CatchUp = v
		}
	}
	if v, n := d.integer(m, "fiscal_year_start_month", false); n != nil {
		if v < 1 || v > 12 {
			d.fail(n, RuleFiscalYear, "fiscal_year_start_month %d is not a month (1 to 12)", v)
		} else {
			p.FiscalYearStartMonth = time.Month(v)
		}
	}
	before := len(d.errs)
	p.Targets = d.targets(m)
	d.targetsOK = len(d.errs) == before
	p.Classes = d.classes(m, p)
	p.Deadlines = d.deadlines(m, p)
	return p
}

func (d *decoder) targets(root mapping) []*Target {
	items, _ := d.list(root, "targets", true)
	var out []*Target
	seen := map[string]int{}
	for i, it := range items {
		m := d.mapping(it, fmt.Sprintf("targets[%d]: ", i), "name", "kind", "offsite")
		if it.Kind != yaml.MappingNode {
			continue
		}
		t := &Target{Line: it.Line}
		if s, n := d.str(m, "name", true); n != nil && s != "" {
			m.where = fmt.Sprintf("target %q: ", s)
			if d.checkName(n, "target", s) {
				if line, dup := seen[s]; dup {
					d.fail(n, RuleDuplicateName, "target %q is already defined on line %d", s, line)
				}
				seen[s] = n.Line
			}
			t.Name = s
		}
		if s, n := d.str(m, "kind", true); n != nil && s != "" {
			switch s {
			case KindFS, KindS3, KindGCS, KindAzure, KindRclone:
			default:
				d.fail(n, RuleTargetKind, "%skind %q is not one of fs, s3, gcs, azure, rclone", m.where, s)
			}
			t.Kind = s
		}
		t.Offsite, _ = d.boolean(m, "offsite")
		out = append(out, t)
	}
	return out
}

var classKeys = []string{"description", "timezone", "schedules", "retention", "targets", "replicas", "immutability", "rpo", "rto", "drill", "override_321", "override_rpo"}

func (d *decoder) classes(root mapping, p *Policy) []*Class {
	n := d.get(root, "classes", true)
	if n == nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, RuleType, "classes: expected a mapping of class names to classes, found %s", describe(n))
		return nil
	}
	if len(n.Content) == 0 {
		d.fail(n, RuleRequired, "classes must define at least one data class")
	}
	var out []*Class
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.fail(k, RuleType, "classes: class names must be plain names, found %s", describe(k))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.fail(k, RuleDuplicateName, "class %q is already defined on line %d", k.Value, line)
			continue
		}
		seen[k.Value] = k.Line
		d.checkName(k, "class", k.Value)
		out = append(out, d.class(k, v, p))
	}
	return out
}

func (d *decoder) class(key, val *yaml.Node, p *Policy) *Class {
	c := &Class{Name: key.Value, Line: key.Line, Location: p.Location}
	where := fmt.Sprintf("class %q: ", c.Name)
	m := d.mapping(val, where, classKeys...)
	m.key = key
	if val.Kind != yaml.MappingNode {
		if isNull(val) {
			d.fail(key, RuleRequired, "%sthe class is empty", where)
		}
		return c
	}
	c.Description, _ = d.str(m, "description", false)
	c.Location = d.location(m, "timezone", p.Location)
	c.Schedules = d.schedules(m, c, p)

	// Targets and replicas.
	names, nodes, _ := d.names(m, "targets", true)
	seen := map[string]bool{}
	for i, name := range names {
		switch {
		case p.Target(name) == nil:
			d.fail(nodes[i], RuleTarget, "%starget %q is not defined under targets", where, name)
		case seen[name]:
			d.fail(nodes[i], RuleTarget, "%starget %q is listed twice", where, name)
		default:
			c.Targets = append(c.Targets, name)
		}
		seen[name] = true
	}
	c.Replicas = len(c.Targets)
	if v, n := d.integer(m, "replicas", false); n != nil {
		if v < 1 || (len(c.Targets) > 0 && v > len(c.Targets)) {
			d.fail(n, RuleReplicas, "%sreplicas %d must be between 1 and the number of targets (%d)", where, v, len(c.Targets))
		} else {
			c.Replicas = v
		}
	}

	// Objectives.
	var rpoText string
	c.RPO, rpoText = d.requiredDuration(m, "rpo", RuleRPO, "the most data, in time, the class may lose, e.g. 48h")
	c.RTO, _ = d.requiredDuration(m, "rto", RuleRTO, "the longest a restore may take, e.g. 48h")
	c.Retention = d.retention(m, c, rpoText)
	c.Immutability = d.immutability(m, c, p)
	c.Drill = d.drill(m, c)

	// Overrides, then the rules they override.
	var o321, orpo *yaml.Node
	c.Override321, o321 = d.str(m, "override_321", false)
	c.OverrideRPO, orpo = d.str(m, "override_rpo", false)
	for _, o := range []struct {
		n    *yaml.Node
		text string
		key  string
	}{{o321, c.Override321, "override_321"}, {orpo, c.OverrideRPO, "override_rpo"}} {
		if o.n != nil && strings.TrimSpace(o.text) == "" {
			d.fail(o.n, RuleOverride, "%s%s needs the reason the rule is overridden", where, o.key)
		}
	}
	if d.targetsOK && len(names) > 0 && len(c.Targets) == len(names) {
		d.check321(c, p, m.keyNode("targets"), o321)
	}
	if c.RPO > 0 && len(c.Schedules) > 0 {
		d.checkGap(c, m.keyNode("rpo"), rpoText, orpo)
	}
	return c
}

func (d *decoder) schedules(cm mapping, c *Class, p *Policy) []*Schedule {
	items, _ := d.list(cm, "schedules", true)
	var out []*Schedule
	seen := map[string]int{}
	for i, it := range items {
		where := fmt.Sprintf("class %q schedules[%d]: ", c.Name, i)
		m := d.mapping(it, where, "name", "cron", "method", "full_every")
		if it.Kind != yaml.MappingNode {
			continue
		}
		s := &Schedule{Line: it.Line, Location: c.Location, Method: MethodIncremental}
		ok := true
		if name, n := d.str(m, "name", true); n != nil && name != "" {
			where = fmt.Sprintf("class %q schedule %q: ", c.Name, name)
			m.where = where
			if d.checkName(n, "schedule", name) {
				if line, dup := seen[name]; dup {
					d.fail(n, RuleDuplicateName, "%sschedule %q is already defined on line %d", where, name, line)
				}
				seen[name] = n.Line
			}
			s.Name = name
		} else {
			ok = false
		}
		if expr, n := d.str(m, "cron", true); n != nil && expr != "" {
			spec, err := parseCron(expr)
			switch {
			case err != nil:
				d.fail(n, RuleCron, "%scron %q: %v", where, expr, err)
				ok = false
			case nextIn(spec, c.Location, time.Date(2027, 1, 1, 0, 0, 0, 0, c.Location)).IsZero():
				d.fail(n, RuleCron, "%scron %q is never due", where, expr)
				ok = false
			}
			s.Cron, s.spec = expr, spec
		} else {
			ok = false
		}
		if meth, n := d.str(m, "method", false); n != nil {
			if meth != MethodIncremental && meth != MethodFull {
				d.fail(n, RuleMethod, "%smethod %q is not incremental or full", where, meth)
			}
			s.Method = meth
		}
		if v, n := d.integer(m, "full_every", false); n != nil {
			switch {
			case s.Method == MethodFull:
				d.fail(n, RuleFullEvery, "%sfull_every makes some ticks of an incremental schedule full; this schedule is already full", where)
			case v < 2:
				d.fail(n, RuleFullEvery, "%sfull_every %d must be at least 2 (1 would make every tick full: use method: full)", where, v)
			case p.Effective.IsZero():
				d.fail(n, RuleFullEvery, "%sfull_every counts ticks from the policy's effective date: set effective (YYYY-MM-DD)", where)
			default:
				s.FullEvery = v
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

func (d *decoder) retention(cm mapping, c *Class, rpoText string) Retention {
	var r Retention
	where := fmt.Sprintf("class %q: ", c.Name)
	n := d.get(cm, "retention", true)
	if n == nil {
		return r
	}
	m := d.mapping(n, where+"retention: ", "min", "keep_last", "daily", "weekly", "monthly", "yearly")
	m.key = cm.keyNode("retention")
	if n.Kind != yaml.MappingNode {
		return r
	}
	for _, f := range []struct {
		key string
		dst *int
	}{{"keep_last", &r.KeepLast}, {"daily", &r.Daily}, {"weekly", &r.Weekly}, {"monthly", &r.Monthly}, {"yearly", &r.Yearly}} {
		v, vn := d.integer(m, f.key, false)
		if vn != nil && v < 0 {
			d.fail(vn, RuleRetention, "%sretention.%s %d must not be negative", where, f.key, v)
			continue
		}
		*f.dst = v
	}
	v, minText := d.requiredDuration(m, "min", RuleRetentionMin, "no backup younger than this is ever expired, e.g. 30d")
	if v > 0 && c.RPO > 0 && v < c.RPO {
		d.fail(m.keyNode("min"), RuleRetentionMin, "%sretention.min %s is shorter than the RPO %s: the newest backup could expire before the next one is taken", where, minText, rpoText)
	}
	r.Min = v
	return r
}

func (d *decoder) immutability(cm mapping, c *Class, p *Policy) Immutability {
	im := Immutability{Mode: ImmutabilityNone}
	where := fmt.Sprintf("class %q: ", c.Name)
	n := d.get(cm, "immutability", false)
	if n == nil {
		return im
	}
	m := d.mapping(n, where+"immutability: ", "mode", "retain_days", "legal_hold_on_suspicious")
	m.key = cm.keyNode("immutability")
	if n.Kind != yaml.MappingNode {
		return im
	}
	mode, mn := d.str(m, "mode", false)
	badMode := false
	if mn != nil {
		switch mode {
		case ImmutabilityNone, ImmutabilityGovernance, ImmutabilityCompliance:
			im.Mode = mode
		default:
			d.fail(mn, RuleImmutability, "%simmutability.mode %q is not none, governance or compliance", where, mode)
			badMode = true
		}
	}
	days, dn := d.integer(m, "retain_days", false)
	im.RetainDays = days
	switch {
	case badMode:
	case im.Mode == ImmutabilityNone && dn != nil && days != 0:
		d.fail(dn, RuleImmutability, "%simmutability.retain_days %d needs mode governance or compliance", where, days)
	case im.Mode != ImmutabilityNone && days < 1:
		d.fail(m.keyNode("retain_days"), RuleImmutability, "%simmutability mode %s needs retain_days of at least 1", where, im.Mode)
	}
	var hn *yaml.Node
	im.LegalHoldOnSuspicious, hn = d.boolean(m, "legal_hold_on_suspicious")
	if im.Mode != ImmutabilityNone || im.LegalHoldOnSuspicious {
		can := false
		for _, name := range c.Targets {
			if t := p.Target(name); t != nil && lockable(t.Kind) {
				can = true
			}
		}
		at := mn
		if at == nil {
			at = hn
		}
		if !can && len(c.Targets) > 0 {
			d.fail(at, RuleImmutability, "%sno target of the class can lock objects (only s3, gcs and azure targets can); immutability and legal holds need at least one", where)
		}
		// An rclone remote never holds an immutable copy, and refuses a locked write.
		for _, name := range c.Targets {
			if t := p.Target(name); t != nil && t.Kind == KindRclone {
				d.fail(at, RuleImmutability, "%starget %q is of kind rclone, which cannot lock objects: it never holds an immutable copy and refuses locked writes; keep it out of classes with immutability or legal holds", where, name)
			}
		}
	}
	return im
}

// check321 applies the 3-2-1 rule (seed 003, 12.2 item 2): at least three copies, on at least
// two kinds of storage, at least one off-site.
func (d *decoder) check321(c *Class, p *Policy, at, override *yaml.Node) {
	kinds := map[string]bool{}
	offsite := 0
	for _, name := range c.Targets {
		if t := p.Target(name); t != nil {
			kinds[t.Kind] = true
			if t.Offsite {
				offsite++
			}
		}
	}
	var broken []string
	if n := len(c.Targets); n < 3 {
		broken = append(broken, fmt.Sprintf("%d %s (needs 3)", n, plural(n, "copy", "copies")))
	}
	if len(kinds) < 2 {
		broken = append(broken, fmt.Sprintf("%d kind of storage (needs 2)", len(kinds)))
	}
	if offsite == 0 {
		broken = append(broken, "no off-site target (needs 1)")
	}
	where := fmt.Sprintf("class %q: ", c.Name)
	switch {
	case len(broken) == 0 && override != nil:
		d.warn(override, RuleOverride, "%soverride_321 is set but the class meets 3-2-1; remove it", where)
	case len(broken) == 0:
	case override != nil && strings.TrimSpace(c.Override321) != "":
		d.warn(override, Rule321, "%sbreaks 3-2-1 (%s); accepted by override_321: %s", where, strings.Join(broken, ", "), c.Override321)
	case override == nil:
		d.fail(at, Rule321, "%sbreaks 3-2-1: %s; add targets, or accept it with override_321: \"<reason>\"", where, strings.Join(broken, ", "))
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// Gap-check window: two calendar years, one of them leap, so month lengths, leap days and both
// DST changes are covered. Fixed, so that a policy's verdict does not depend on the day it is
// checked.
var (
	gapFrom = [3]int{2027, 1, 1}
	gapTo   = [3]int{2029, 1, 1}
)

// checkGap checks that the class's schedules never leave more than the RPO between two backups
// (seed 003, 12.2 item 2: schedule backups at intervals that align with RPOs).
func (d *decoder) checkGap(c *Class, at *yaml.Node, rpoText string, override *yaml.Node) {
	from := time.Date(gapFrom[0], time.Month(gapFrom[1]), gapFrom[2], 0, 0, 0, 0, c.Location)
	to := time.Date(gapTo[0], time.Month(gapTo[1]), gapTo[2], 0, 0, 0, 0, c.Location)
	start, end, gap := LongestGap(c, from, to, c.RPO)
	where := fmt.Sprintf("class %q: ", c.Name)
	if gap <= c.RPO {
		if override != nil {
			d.warn(override, RuleOverride, "%soverride_rpo is set but the schedules meet the RPO; remove it", where)
		}
		return
	}
	what := fmt.Sprintf("the schedules leave %s between backups (%s to %s), more than the RPO %s",
		FormatDuration(gap), start.Format(time.RFC3339), end.Format(time.RFC3339), rpoText)
	if end.IsZero() {
		what = fmt.Sprintf("the schedules stop after %s, so the RPO %s cannot be met", start.Format(time.RFC3339), rpoText)
	}
	if override != nil {
		if strings.TrimSpace(c.OverrideRPO) != "" {
			d.warn(override, RuleRPO, "%s%s; accepted by override_rpo: %s", where, what, c.OverrideRPO)
		}
		return
	}
	d.fail(at, RuleRPO, "%s%s; schedule backups more often, or accept it with override_rpo: \"<reason>\"", where, what)
}

// LongestGap looks for a gap longer than limit between consecutive due times of the class's
// schedules, from the first due time at or after from until the first one at or after to. It
// returns the first such gap (start, end, length), or, when there is none, a gap no longer than
// limit. end is zero when the schedules stop being due.
func LongestGap(c *Class, from, to time.Time, limit time.Duration) (start, end time.Time, gap time.Duration) {
	next := func(t time.Time) time.Time {
		var best time.Time
		for _, s := range c.Schedules {
			if n := s.Next(t); !n.IsZero() && (best.IsZero() || n.Before(best)) {
				best = n
			}
		}
		return best
	}
	x := next(from.Add(-time.Nanosecond))
	if x.IsZero() {
		return from, time.Time{}, 1<<63 - 1
	}
	var longest time.Duration
	// Invariant: x is a due time and no gap before it exceeds limit. Jumping ahead by half the
	// limit keeps this fast for dense schedules without missing a gap.
	for x.Before(to) {
		if y := next(x.Add(limit / 2)); !y.IsZero() && y.Sub(x) <= limit {
			longest = max(longest, min(y.Sub(x), limit))
			x = y
			continue
		}
		n := next(x)
		if n.IsZero() {
			return x, time.Time{}, 1<<63 - 1
		}
		g := n.Sub(x)
		if g > limit {
			return x, n, g
		}
		longest = max(longest, g)
		x = n
	}
	return time.Time{}, time.Time{}, longest
}

var timeOfDay = pattern.Lazy(`^([01][0-9]|2[0-3]):([0-5][0-9])$`)

func (d *decoder) deadlines(root mapping, p *Policy) []*Deadline {
	items, _ := d.list(root, "deadlines", false)
	var out []*Deadline
	seen := map[string]int{}
	for i, it := range items {
		where := fmt.Sprintf("deadlines[%d]: ", i)
		m := d.mapping(it, where, "name", "kind", "time", "date", "classes")
		if it.Kind != yaml.MappingNode {
			continue
		}
		dl := &Deadline{Line: it.Line, Hour: 23}
		if name, n := d.str(m, "name", true); n != nil && name != "" {
			where = fmt.Sprintf("deadline %q: ", name)
			m.where = where
			if d.checkName(n, "deadline", name) {
				if line, dup := seen[name]; dup {
					d.fail(n, RuleDuplicateName, "deadline %q is already defined on line %d", name, line)
				}
				seen[name] = n.Line
			}
			dl.Name = name
		}
		kind, kn := d.str(m, "kind", true)
		switch {
		case kn == nil:
		case kind == DeadlineEndOfMonth || kind == DeadlineEndOfFiscalYear || kind == DeadlineDate:
			dl.Kind = kind
		default:
			d.fail(kn, RuleDeadline, "%skind %q is not end_of_month, end_of_fiscal_year or date", where, kind)
		}
		if s, n := d.str(m, "time", false); n != nil {
			sm := timeOfDay().FindStringSubmatch(s)
			switch {
			case dl.Kind == DeadlineDate:
				d.fail(n, RuleDeadline, "%stime is for end_of_month and end_of_fiscal_year; a date deadline carries its time in date", where)
			case sm == nil:
				d.fail(n, RuleDeadline, "%stime %q is not a time of day (HH:MM, 00:00 to 23:59)", where, s)
			default:
				dl.Hour, _ = strconv.Atoi(sm[1])
				dl.Minute, _ = strconv.Atoi(sm[2])
			}
		}
		s, n := d.scalar(m, "date", false)
		switch {
		case n != nil && dl.Kind != DeadlineDate && dl.Kind != "":
			d.fail(n, RuleDeadline, "%sdate is only for kind date; %s deadlines recur", where, dl.Kind)
		case n != nil:
			t, err := parseDate(s, p.Location)
			if err != nil {
				d.fail(n, RuleDate, "%sdate: %v", where, err)
			}
			dl.Date = t
		case dl.Kind == DeadlineDate:
			d.fail(m.keyNode("date"), RuleDeadline, "%sa date deadline needs date (an RFC 3339 time, e.g. 2027-05-25T09:00:00Z)", where)
		}
		names, nodes, listNode := d.names(m, "classes", false)
		if listNode == nil {
			dl.Classes = p.ClassNames()
		} else if len(listNode.Content) == 0 {
			d.fail(listNode, RuleDeadline, "%sclasses is empty; omit it to apply the deadline to every class", where)
		}
		dup := map[string]bool{}
		for j, c := range names {
			switch {
			case p.Class(c) == nil:
				d.fail(nodes[j], RuleDeadline, "%sclass %q is not defined under classes", where, c)
			case dup[c]:
				d.fail(nodes[j], RuleDeadline, "%sclass %q is listed twice", where, c)
			default:
				dl.Classes = append(dl.Classes, c)
			}
			dup[c] = true
		}
		out = append(out, dl)
	}
	return out
}
