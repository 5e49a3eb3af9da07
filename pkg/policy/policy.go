// Package policy reads and checks a Custos backup policy: the data classes with their schedules,
// backup methods, retention, targets, immutability, RPO and RTO, the compliance deadlines and
// the scheduler's catch-up window. docs/policy.md describes the file format and every rule.
//
// Parse checks everything before anything runs and reports every problem at once, each as an
// *Error naming the file, line, column and rule. Default returns the policy of record (seed 002,
// with the 3-2-1 rule of seed 003).
package policy

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/robfig/cron/v3"

	// Time zones are embedded so that every scheduler replica, whatever its image, reads the same
	// zone rules and computes the same due times.
	_ "time/tzdata"
)

// Policy is a parsed, valid policy. Treat it as read-only.
type Policy struct {
	// File is the name the policy was parsed from; errors and warnings are reported against it.
	File string
	// Version of the file format; 1.
	Version int
	// Tenant is the tenant (meta.tenant) whose data the policy governs.
	Tenant string
	// Effective is the date the policy takes effect (00:00 in Location); zero when not set. It
	// anchors the counting of Schedule.FullEvery.
	Effective time.Time
	// Location is the policy's time zone: the default for classes and the zone of compliance
	// deadlines. Default UTC.
	Location *time.Location
	// CatchUp is how late the scheduler may still fire a tick or deadline it missed (it was
	// down); older ones are recorded as skipped. Default DefaultCatchUp.
	CatchUp time.Duration
	// FiscalYearStartMonth is the first month of the fiscal year; the end_of_fiscal_year
	// deadline falls on the last day of the month before. Default January.
	FiscalYearStartMonth time.Month
	// Targets are the storage targets classes may name.
	Targets []*Target
	// Classes in file order.
	Classes []*Class
	// Deadlines are the compliance deadlines, in file order.
	Deadlines []*Deadline
	// Warnings are accepted deviations (a rule overridden with a reason). They have the shape of
	// an Error and are meant to be shown to whoever checks the policy.
	Warnings []*Error
}

// DefaultCatchUp is the catch-up window when the policy does not set one: a tick missed by up to
// a day (a scheduler outage over a night) still fires; older ones are recorded as skipped.
const DefaultCatchUp = 24 * time.Hour

// Target kinds: the storage Custos writes to. Each kind is one kind of storage for 3-2-1.
const (
	KindFS    = "fs"    // a local or mounted (off-site) disk
	KindS3    = "s3"    // S3-compatible object storage
	KindGCS   = "gcs"   // Google Cloud Storage
	KindAzure = "azure" // Azure Blob Storage
	// KindRclone is a remote reached through rclone (SFTP, WebDAV, Dropbox, Box, Drive, pCloud,
	// B2): none can lock objects, so it never counts toward a class's immutable copies.
	KindRclone = "rclone"
)

// lockable reports whether a target kind can make objects immutable (object lock, retention
// policy, immutable blob) and hold them legally.
func lockable(kind string) bool { return kind == KindS3 || kind == KindGCS || kind == KindAzure }

// Target is a storage target as the policy sees it: enough to check 3-2-1. The runtime
// configuration says how to reach it.
type Target struct {
	Name    string
	Kind    string // KindFS, KindS3, KindGCS, KindAzure or KindRclone
	Offsite bool   // in another location than the primary data (another site or region)
	Line    int
}

// Methods of a backup.
const (
	MethodIncremental = "incremental" // what changed since the previous backup
	MethodFull        = "full"        // everything
)

// Class is a data class: what the policy demands for one category of customer data.
type Class struct {
	Name        string
	Description string
	// Location is the time zone of the class's schedules.
	Location *time.Location
	// Schedules say when backups of the class run (at least one).
	Schedules []*Schedule
	Retention Retention
	// Targets are the names of the targets every backup of the class is written to.
	Targets []string
	// Replicas is how many of Targets must hold a backup before it counts as done (the others
	// are repaired later). Default: all of them.
	Replicas     int
	Immutability Immutability
	// RPO is the most data, in time, the class may lose: the longest allowed gap between
	// backups. RTO is the longest a restore may take.
	RPO time.Duration
	RTO time.Duration
	// Drill says when restore drills of the class are due and how much they restore; never nil
	// after Parse (quarterly by default, seed 002 3.4).
	Drill *Drill
	// Override321 and OverrideRPO accept, with the reason given, a class that breaks the 3-2-1
	// rule or whose schedules leave gaps longer than its RPO. Each is reported as a warning.
	Override321 string
	OverrideRPO string
	Line        int
}

// Schedule is one cron expression of a class and the method of the backups it triggers.
type Schedule struct {
	Name string
	// Cron is the expression as written: 5 fields (minute hour day-of-month month day-of-week)
	// or a descriptor (@daily, @weekly, @monthly, @yearly, @hourly).
	Cron string
	// Method is MethodIncremental or MethodFull.
	Method string
	// FullEvery, when > 0 on an incremental schedule, makes every FullEvery-th tick full,
	// counting ticks from the policy's Effective date (the first tick on or after it is full).
	FullEvery int
	// Location is the class's time zone, in which Cron is read.
	Location *time.Location
	Line     int
	spec     cron.Schedule
}

// Retention says how long backups of a class are kept. The counts follow the usual
// keep-last/daily/weekly/monthly/yearly scheme: the newest backup of each of the last N days
// (weeks, months, years) is kept. Min is a guardrail: no backup younger than Min is ever
// expired, whatever the counts say.
type Retention struct {
	KeepLast int
	Daily    int
	Weekly   int
	Monthly  int
	Yearly   int
	Min      time.Duration
}

// Immutability modes (object lock semantics).
const (
	ImmutabilityNone       = "none"
	ImmutabilityGovernance = "governance" // locked, but a privileged role may lift the lock
	ImmutabilityCompliance = "compliance" // locked; nobody can delete before RetainDays
)

// Immutability says whether backups of a class are locked against deletion and change.
type Immutability struct {
	Mode       string // ImmutabilityNone, ImmutabilityGovernance or ImmutabilityCompliance
	RetainDays int    // how long each backup stays locked; 0 with ImmutabilityNone
	// LegalHoldOnSuspicious puts the snapshot a suspicious-activity event triggers under legal
	// hold (locked until the hold is released).
	LegalHoldOnSuspicious bool
}

// Deadline kinds.
const (
	DeadlineEndOfMonth      = "end_of_month"
	DeadlineEndOfFiscalYear = "end_of_fiscal_year"
	DeadlineDate            = "date"
)

// Deadline is a compliance deadline: a moment by which a backup must exist (seed 001, 2.4:
// end of month, fiscal year, GDPR scheduled events).
type Deadline struct {
	Name string
	Kind string // DeadlineEndOfMonth, DeadlineEndOfFiscalYear or DeadlineDate
	// Hour and Minute are the time of day (in the policy's time zone) on the last day of the
	// period at which a month or fiscal-year deadline falls due. Default 23:00.
	Hour, Minute int
	// Date is when a DeadlineDate deadline falls due.
	Date time.Time
	// Classes the deadline applies to; all classes when the file does not say.
	Classes []string
	Line    int
}

// Class returns the class with the given name, or nil.
func (p *Policy) Class(name string) *Class {
	for _, c := range p.Classes {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// ClassNames returns the class names in file order.
func (p *Policy) ClassNames() []string {
	out := make([]string, len(p.Classes))
	for i, c := range p.Classes {
		out[i] = c.Name
	}
	return out
}

// Target returns the target with the given name, or nil.
func (p *Policy) Target(name string) *Target {
	for _, t := range p.Targets {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Load reads and parses a policy file. Errors are reported against the file's base name.
func Load(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return Parse(filepath.Base(path), b)
}

//go:embed default.yaml
var defaultYAML []byte

// DefaultYAML returns the text of the default policy, with its comments citing the seeds.
func DefaultYAML() []byte { return append([]byte(nil), defaultYAML...) }

// Default returns the policy of record (seed 002, Cellsoft Customer Data Backup Policy, with the
// 3-2-1 rule of seed 003): critical data backed up daily and kept 30 days, RPO 48 h, RTO 48 h;
// important data weekly, 90 days, RPO 7 days, RTO 72 h; non-essential data monthly as full
// backups, 180 days, RPO 30 days, RTO 7 days. The file is default.yaml in this package; each
// value there cites the seed it comes from, or says it is a Custos choice.
func Default() *Policy {
	p, err := Parse("default.yaml", defaultYAML)
	if err != nil {
		panic("policy: the built-in default policy is invalid: " + err.Error())
	}
	return p
}
