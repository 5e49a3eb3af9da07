package policy

import (
	"fmt"
	"strings"
)

// Rules a policy file can break. Error.Rule holds one of them; docs/policy.md explains each.
const (
	RuleSyntax        = "syntax"         // not YAML
	RuleUnknownKey    = "unknown-key"    // a key the format does not define (a typo)
	RuleDuplicateKey  = "duplicate-key"  // the same key twice in one mapping
	RuleType          = "type"           // a value of the wrong type (a list where a string is expected...)
	RuleRequired      = "required"       // a required key is missing or empty
	RuleVersion       = "version"        // version is not 1
	RuleName          = "name"           // a tenant, class, schedule, target or deadline name is malformed
	RuleDuplicateName = "duplicate-name" // two classes, schedules, targets or deadlines share a name
	RuleTimezone      = "timezone"       // not an IANA time zone name
	RuleDuration      = "duration"       // not a duration (48h, 30d, 2w, 1d12h)
	RuleDate          = "date"           // not a date (YYYY-MM-DD) or an RFC 3339 time
	RuleCatchUp       = "catch-up"       // catch_up is not positive
	RuleFiscalYear    = "fiscal-year"    // fiscal_year_start_month is not 1 to 12
	RuleTargetKind    = "target-kind"    // a target kind Custos does not know
	RuleTarget        = "target"         // a class names a target the policy does not define, or twice
	RuleReplicas      = "replicas"       // required replicas not between 1 and the number of targets
	RuleCron          = "cron"           // a cron expression that does not parse, or is not calendar-anchored
	RuleMethod        = "method"         // a method other than incremental or full
	RuleFullEvery     = "full-every"     // full_every misused
	RuleRetention     = "retention"      // retention keeps nothing, or a negative count
	RuleRetentionMin  = "retention-min"  // retention.min missing or shorter than the RPO
	RuleRPO           = "rpo"            // RPO missing, or the schedules leave a longer gap
	RuleRTO           = "rto"            // RTO missing
	RuleImmutability  = "immutability"   // immutability settings inconsistent or impossible on the targets
	Rule321           = "3-2-1"          // fewer than 3 copies, 2 kinds of storage or 1 off-site copy
	RuleOverride      = "override"       // an override without a reason
	RuleDeadline      = "deadline"       // a compliance deadline misconfigured
)

// Error is one problem in a policy file: where it is and which rule it breaks. Parse returns every
// Error it finds, joined with errors.Join; use errors.As or Errors to get them back.
type Error struct {
	File   string // the file name given to Parse
	Line   int    // 1-based; 0 when the problem has no position (a built-in policy)
	Column int    // 1-based; 0 when unknown
	Rule   string // one of the Rule constants
	Msg    string // what is wrong, and where it helps, how to fix it
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	fmt.Fprintf(&b, ": %s (rule %s)", e.Msg, e.Rule)
	return b.String()
}

// Errors returns the *Error values joined in err (as returned by Parse and Load), in file order.
// It returns nil for nil, and wraps any other error as a single Error without position.
func Errors(err error) []*Error {
	if err == nil {
		return nil
	}
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case *Error:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		default:
			out = append(out, &Error{Rule: RuleSyntax, Msg: err.Error()})
		}
	}
	walk(err)
	return out
}
