// Package report builds the compliance report an auditor reads: for each control of the policy
// documents of record (seed 002 sections 3 to 6, seed 003 items 1 to 5), the configured setting,
// the evidence drawn from the audit log (counts, times, gaps, failures, drills with their
// figures) and a verdict, pass, fail or not_applicable, with the reason.
//
// A report is computed from one signed checkpoint of the audit log and only from the entries it
// covers: Build verifies them against it first (pkg/audit) and refuses a log that does not
// verify. The report carries the checkpoint, so an auditor can verify the same entries offline
// (`custos audit verify`) and recompute every figure. docs/report.md describes each control and
// docs/report.schema.json the JSON.
package report

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/custos-dev/custos/pkg/audit"
	"github.com/custos-dev/custos/pkg/internal/pattern"
	"github.com/custos-dev/custos/pkg/policy"
)

// Format names the report's JSON format; another format gets another name.
const Format = "custos-compliance-report/1"

// Statuses of a control, and of a class within it.
const (
	StatusPass          = "pass"
	StatusFail          = "fail"
	StatusNotApplicable = "not_applicable"
)

// Named errors, matched with errors.Is. A log that does not verify also wraps audit.ErrTampered
// or audit.ErrCheckpoint.
var (
	// ErrInput means Build was given an incomplete or inconsistent input.
	ErrInput = errors.New("report: bad input")
	// ErrUnverified means the entries are not the log the checkpoint signs: no report is made.
	ErrUnverified = errors.New("report: the audit log does not verify against the checkpoint")
)

var digestRE = pattern.Lazy(`^sha256:[0-9a-f]{64}$`)

// Input is what a report is computed from.
type Input struct {
	// Policy is the policy in force; PolicyFile names it ("default" for the built-in one) and
	// PolicyDigest is "sha256:" and the hex SHA-256 of its file's bytes (PolicyDigest).
	Policy       *policy.Policy
	PolicyFile   string
	PolicyDigest string
	// Entries are every entry of the audit log by position, as read (nil where one is missing).
	Entries [][]byte
	// Checkpoint is the signed checkpoint the report is computed from, VerifierKey the key that
	// signed it (audit.VerifierKey form). Only the entries it covers are used.
	Checkpoint  []byte
	VerifierKey string
	// From and To bound the period, [From, To).
	From, To time.Time
	// Now is when the report is made.
	Now time.Time
	// Links are the network connections backups travel over (the broker, cloud targets), for
	// the in-transit half of the encryption control; empty: not judged.
	Links []Link
	// VerifyCommand is the command line that verifies the log offline, printed in the report
	// (default: "custos audit verify --verifier-key <key>").
	VerifyCommand string
}

// Link is one network connection backups travel over.
type Link struct {
	// Name says what it is ("nats", "target s3-eu").
	Name string
	// URL is where it goes; empty for a cloud SDK's default endpoint (HTTPS).
	URL string
}

// PolicyDigest returns the digest of a policy file's bytes, as audit entries record it.
func PolicyDigest(file []byte) string {
	sum := sha256.Sum256(file)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Report is the compliance report. Marshalled to JSON it follows docs/report.schema.json.
type Report struct {
	Format      string    `json:"format"`
	Period      Period    `json:"period"`
	GeneratedAt time.Time `json:"generated_at"`
	Tenant      string    `json:"tenant"`
	Policy      PolicyRef `json:"policy"`
	// Checkpoint is the signed checkpoint the evidence was computed from and verified against.
	Checkpoint CheckpointRef `json:"checkpoint"`
	Log        LogRef        `json:"log"`
	Summary    Summary       `json:"summary"`
	Controls   []Control     `json:"controls"`
}

// Period is the reporting period: the days From to To, inclusive, in TimeZone; Start and End
// are its bounds as instants, [Start, End).
type Period struct {
	From     string    `json:"from"`
	To       string    `json:"to"`
	TimeZone string    `json:"time_zone"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	// EvidenceEnd is where the evidence stops: End, or the checkpoint's time or Now when earlier
	// (what happened later is not in the log the checkpoint covers).
	EvidenceEnd time.Time `json:"evidence_end"`
}

// PolicyRef names the policy in force.
type PolicyRef struct {
	File   string `json:"file"`
	Digest string `json:"digest"`
}

// CheckpointRef is the checkpoint a report was computed from.
type CheckpointRef struct {
	// Text is the five signed lines; Signed the whole note, signature included.
	Text   string `json:"text"`
	Signed string `json:"signed"`
	Size   int64  `json:"size"`
	// TreeHash is the RFC 6962 tree hash of entries 0 … Size-1, LastEntryHash the SHA-256 of
	// entry Size-1, both base64.
	TreeHash      string    `json:"tree_hash"`
	LastEntryHash string    `json:"last_entry_hash"`
	Time          time.Time `json:"time"`
	VerifierKey   string    `json:"verifier_key"`
}

// LogRef says which entries the report read and how to check them.
type LogRef struct {
	// Entries is how many entries the log held; Used how many the checkpoint covers (all the
	// report read); InPeriod how many of those fall in the period.
	Entries  int64 `json:"entries"`
	Used     int64 `json:"used"`
	InPeriod int64 `json:"in_period"`
	// Unreadable are positions of verified entries that do not parse as entries.
	Unreadable []int64 `json:"unreadable"`
	// VerifyCommand verifies the log offline; the checkpoint above must be among those it reports.
	VerifyCommand string `json:"verify_command"`
}

// Summary counts the controls by status.
type Summary struct {
	Pass          int `json:"pass"`
	Fail          int `json:"fail"`
	NotApplicable int `json:"not_applicable"`
}

// Source cites a policy document of record.
type Source struct {
	// Seed is "002" (Cellsoft Customer Data Backup Policy) or "003" (Spectra360 12.2).
	Seed    string `json:"seed"`
	Section string `json:"section"`
	// Text is what the document asks, quoted or closely paraphrased.
	Text string `json:"text"`
}

// Control is one control of the policy documents and its verdict.
type Control struct {
	ID      string   `json:"id"`
	Title   string   `json:"title"`
	Sources []Source `json:"sources"`
	// Setting is the configured setting, for the control as a whole.
	Setting string `json:"setting"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	// Evidence is drawn from the whole log; Classes holds the verdict of each data class for the
	// controls judged per class (empty otherwise).
	Evidence Evidence      `json:"evidence"`
	Classes  []ClassResult `json:"classes"`
}

// ClassResult is one data class's setting, evidence and verdict for a control.
type ClassResult struct {
	Class    string   `json:"class"`
	Setting  string   `json:"setting"`
	Evidence Evidence `json:"evidence"`
	Status   string   `json:"status"`
	Reason   string   `json:"reason"`
}

// Evidence is what the audit log (and, for configuration-only facts, the policy) shows. Facts
// are human-readable lines; the other members, each present only where it applies, hold the
// figures and the positions of the entries they come from.
type Evidence struct {
	Facts         []string      `json:"facts"`
	Backups       *Backups      `json:"backups,omitempty"`
	Ticks         *Ticks        `json:"ticks,omitempty"`
	Gaps          []Gap         `json:"gaps,omitempty"`
	Drills        []Drill       `json:"drills,omitempty"`
	Restores      []Restore     `json:"restores,omitempty"`
	Failures      []Failure     `json:"failures,omitempty"`
	Entries       []EntryRef    `json:"entries,omitempty"`
	Targets       []TargetFact  `json:"targets,omitempty"`
	Links         []LinkFact    `json:"links,omitempty"`
	Quarters      []QuarterFact `json:"quarters,omitempty"`
	LongestGapSec *float64      `json:"longest_gap_seconds,omitempty"`
}

// Backups counts the successful backup_commit entries of a class in the period.
type Backups struct {
	Total int `json:"total"`
	// Snapshots counts those committing a snapshot job (Total minus Snapshots committed packs).
	Snapshots int `json:"snapshots"`
	// FirstEntry and LastEntry are the positions of the first and last of them; -1 when none.
	FirstEntry int64 `json:"first_entry"`
	LastEntry  int64 `json:"last_entry"`
	// PerDay, PerWeek (ISO weeks) and PerMonth cover every day, week and month of the period
	// in the class's time zone, zero counts included.
	PerDay   []Count `json:"per_day"`
	PerWeek  []Count `json:"per_week"`
	PerMonth []Count `json:"per_month"`
}

// Count is how many backups fell in one day ("2026-10-01"), ISO week ("2026-W40") or month
// ("2026-10").
type Count struct {
	Period string `json:"period"`
	Count  int    `json:"count"`
}

// Ticks compares the schedule with the backups: each due time needs a backup before the next.
type Ticks struct {
	Due  int `json:"due"`
	Full int `json:"full"`
	Met  int `json:"met"`
	// Pending are due times whose window (until the next due time) runs past the evidence.
	Pending int `json:"pending"`
	// Missed are the due times with no backup before the next due time.
	Missed []time.Time `json:"missed"`
}

// Gap is a stretch of time without a successful backup.
type Gap struct {
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	Seconds float64   `json:"seconds"`
	// FromEntry and ToEntry are the backups bounding it; -1 for the period's start or the end
	// of the evidence.
	FromEntry int64 `json:"from_entry"`
	ToEntry   int64 `json:"to_entry"`
}

// Drill is one drill entry with its figures.
type Drill struct {
	Entry   int64         `json:"entry"`
	Time    time.Time     `json:"time"`
	Class   string        `json:"class"`
	Outcome string        `json:"outcome"`
	Reason  string        `json:"reason"`
	Targets []string      `json:"targets"`
	Figures audit.Figures `json:"figures"`
}

// Restore is one restore entry.
type Restore struct {
	Entry       int64          `json:"entry"`
	Time        time.Time      `json:"time"`
	Class       string         `json:"class"`
	Outcome     string         `json:"outcome"`
	RequestedBy string         `json:"requested_by"`
	Reason      string         `json:"reason"`
	Targets     []string       `json:"targets"`
	Figures     *audit.Figures `json:"figures,omitempty"`
}

// Failure is an entry recording a failure, and what followed it.
type Failure struct {
	Entry   int64     `json:"entry"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Class   string    `json:"class"`
	Outcome string    `json:"outcome"`
	Reason  string    `json:"reason"`
	// ResolvedBy is the first later success of the same kind and class (a backup, a passed
	// drill); -1 when none. ResolvedAfterSec is how long after the failure it came.
	ResolvedBy       int64    `json:"resolved_by"`
	ResolvedAfterSec *float64 `json:"resolved_after_seconds,omitempty"`
}

// EntryRef points at one entry.
type EntryRef struct {
	Entry   int64     `json:"entry"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Class   string    `json:"class"`
	Outcome string    `json:"outcome"`
	// Detail holds the kind's own member: the key of a key rotation, the digest of a policy
	// change, the certificate of an erasure, the count of a retention expiry.
	Detail string `json:"detail"`
}

// TargetFact is a target of a class as the policy describes it.
type TargetFact struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Offsite bool   `json:"offsite"`
	// Lockable reports whether the kind can make objects immutable (s3, gcs, azure).
	Lockable bool `json:"lockable"`
}

// LinkFact is a network connection and whether it is encrypted.
type LinkFact struct {
	Name      string `json:"name"`
	URL       string `json:"url"`
	Encrypted bool   `json:"encrypted"`
	Why       string `json:"why"`
}

// QuarterFact is one calendar quarter of the testing control.
type QuarterFact struct {
	Quarter string `json:"quarter"`
	Passed  int    `json:"passed"`
	Failed  int    `json:"failed"`
	// Complete reports whether the evidence covers the whole quarter.
	Complete bool `json:"complete"`
}

// entry is a verified, parsed entry with its position.
type entry struct {
	audit.Entry
	pos int64
}

// Build verifies the entries against the checkpoint and computes the report of the period.
// It refuses (ErrUnverified, wrapping audit.ErrTampered or audit.ErrCheckpoint and naming the
// first bad entry) entries the checkpoint does not sign. Controls that fail are a report, not an
// error.
func Build(in Input) (*Report, error) {
	switch {
	case in.Policy == nil:
		return nil, fmt.Errorf("%w: no policy", ErrInput)
	case !digestRE().MatchString(in.PolicyDigest):
		return nil, fmt.Errorf("%w: policy digest %q is not sha256: and 64 hex digits", ErrInput, in.PolicyDigest)
	case in.From.IsZero() || !in.From.Before(in.To):
		return nil, fmt.Errorf("%w: the period must end after it starts", ErrInput)
	case in.Now.IsZero():
		return nil, fmt.Errorf("%w: no time of making", ErrInput)
	case len(in.Checkpoint) == 0:
		return nil, fmt.Errorf("%w: no checkpoint: run custos audit checkpoint first", ErrInput)
	}
	v, err := audit.ParseVerifierKey(in.VerifierKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInput, err)
	}
	cp, err := audit.ParseCheckpoint(in.Checkpoint, v)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnverified, err)
	}
	if cp.Size == 0 {
		return nil, fmt.Errorf("%w: the checkpoint covers no entries", ErrInput)
	}
	if cp.Size > int64(len(in.Entries)) {
		return nil, fmt.Errorf("%w: %w: entry %d: missing: the checkpoint names %d entries, the log holds %d",
			ErrUnverified, audit.ErrTampered, len(in.Entries), cp.Size, len(in.Entries))
	}
	used := in.Entries[:cp.Size]
	if _, err := audit.Verify(used, [][]byte{in.Checkpoint}, v); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnverified, err)
	}

	r := &Report{
		Format: Format, GeneratedAt: in.Now.UTC(), Tenant: in.Policy.Tenant,
		Policy: PolicyRef{File: in.PolicyFile, Digest: in.PolicyDigest},
		Checkpoint: CheckpointRef{
			Text: cp.Text(), Signed: string(in.Checkpoint), Size: cp.Size,
			TreeHash:      base64.StdEncoding.EncodeToString(cp.Root[:]),
			LastEntryHash: base64.StdEncoding.EncodeToString(cp.Last[:]),
			Time:          cp.Time.UTC(), VerifierKey: in.VerifierKey,
		},
		Log: LogRef{Entries: int64(len(in.Entries)), Used: cp.Size, Unreadable: []int64{},
			VerifyCommand: in.VerifyCommand},
	}
	if r.Policy.File == "" {
		r.Policy.File = in.Policy.File
	}
	if r.Log.VerifyCommand == "" {
		r.Log.VerifyCommand = "custos audit verify --verifier-key " + in.VerifierKey
	}
	loc := in.Policy.Location
	if loc == nil {
		loc = time.UTC
	}
	end := in.To
	for _, t := range []time.Time{cp.Time, in.Now} {
		if t.Before(end) {
			end = t
		}
	}
	if end.Before(in.From) {
		end = in.From
	}
	r.Period = Period{From: in.From.In(loc).Format(time.DateOnly), To: in.To.Add(-time.Nanosecond).In(loc).Format(time.DateOnly),
		TimeZone: loc.String(), Start: in.From.UTC(), End: in.To.UTC(), EvidenceEnd: end.UTC()}

	var entries []entry
	for i, b := range used {
		var e audit.Entry
		if err := json.Unmarshal(b, &e); err != nil || e.Time.IsZero() {
			r.Log.Unreadable = append(r.Log.Unreadable, int64(i))
			continue
		}
		entries = append(entries, entry{e, int64(i)})
		if !e.Time.Before(in.From) && e.Time.Before(in.To) {
			r.Log.InPeriod++
		}
	}

	c := &computer{in: in, p: in.Policy, entries: entries, from: in.From, to: in.To, end: end, cp: cp, report: r}
	r.Controls = c.controls()
	for _, ctl := range r.Controls {
		switch ctl.Status {
		case StatusPass:
			r.Summary.Pass++
		case StatusFail:
			r.Summary.Fail++
		default:
			r.Summary.NotApplicable++
		}
	}
	return r, nil
}

// JSON returns the report as indented JSON.
func (r *Report) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return append(b, '\n'), nil
}
