package policy_test

import (
	"fmt"

	"github.com/custos-dev/custos/pkg/policy"
)

// Check a policy file: every problem comes back at once, each with its line and rule.
func ExampleParse() {
	src := `version: 1
tenant: acme
targets:
  - {name: disk, kind: fs}
  - {name: cloud, kind: s3, offsite: true}
classes:
  critical:
    schedules:
      - {name: daily, cron: "0 2 * * *"}
    retention: {min: 10d, daily: 10}
    targets: [disk, cloud]
    rpo: 12h
    rto: 48h
`
	_, err := policy.Parse("policy.yaml", []byte(src))
	for _, e := range policy.Errors(err) {
		fmt.Printf("line %d, rule %s\n", e.Line, e.Rule)
	}
	fmt.Println(err)
	// Output:
	// line 11, rule 3-2-1
	// line 12, rule rpo
	// policy.yaml:11:5: class "critical": breaks 3-2-1: 2 copies (needs 3); add targets, or accept it with override_321: "<reason>" (rule 3-2-1)
	// policy.yaml:12:5: class "critical": the schedules leave 1d between backups (2027-01-01T02:00:00Z to 2027-01-02T02:00:00Z), more than the RPO 12h; schedule backups more often, or accept it with override_rpo: "<reason>" (rule rpo)
}

// The default policy is seed 002's.
func ExampleDefault() {
	p := policy.Default()
	for _, c := range p.Classes {
		fmt.Printf("%s: every %s, keep %s, RPO %s, RTO %s\n", c.Name, c.Schedules[0].Cron,
			policy.FormatDuration(c.Retention.Min), policy.FormatDuration(c.RPO), policy.FormatDuration(c.RTO))
	}
	// Output:
	// critical: every 0 2 * * *, keep 30d, RPO 2d, RTO 2d
	// important: every 0 3 * * 0, keep 90d, RPO 7d, RTO 3d
	// non_essential: every 0 4 1 * *, keep 180d, RPO 30d, RTO 7d
}

// A drill's sample: a number of items, a share of the class, or all of it.
func ExampleParseSample() {
	for _, s := range []string{"100", "5%", "all"} {
		sample, _ := policy.ParseSample(s)
		fmt.Println(s, "of 1000 items:", sample.Size(1000))
	}
	// Output:
	// 100 of 1000 items: 100
	// 5% of 1000 items: 50
	// all of 1000 items: 1000
}
