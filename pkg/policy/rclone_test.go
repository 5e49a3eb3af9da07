package policy_test

import (
	"strings"
	"testing"

	"github.com/custos-dev/custos/pkg/policy"
)

// An rclone target (SFTP, WebDAV, Dropbox, ...) is a kind of storage for 3-2-1 but can never
// hold an immutable copy: a class with immutability or legal holds may not use it, and it never
// stands in for a lockable target.
func TestRcloneTargetNeverImmutable(t *testing.T) {
	withSFTP := edit(t, base, "    kind: s3", "    kind: s3\n  - name: sftp\n    kind: rclone\n    offsite: true")
	for _, tc := range []struct {
		name  string
		edits []string
		want  []string // substrings of the errors; none for a valid policy
	}{
		{"without locks", []string{"      mode: compliance", "      mode: none", "      retain_days: 30", "", "      legal_hold_on_suspicious: true", "",
			"    targets: [disk, s3a, s3b]", "    targets: [disk, s3a, sftp]"}, nil},
		{"next to lockable targets", []string{"    targets: [disk, s3a, s3b]", "    targets: [disk, s3a, s3b, sftp]"},
			[]string{`target "sftp" is of kind rclone, which cannot lock objects`}},
		{"instead of lockable targets", []string{"    targets: [disk, s3a, s3b]", "    targets: [disk, sftp]", "    replicas: 2", "    override_321: lab data"},
			[]string{"no target of the class can lock objects", `target "sftp" is of kind rclone`}},
		{"legal holds only", []string{"      mode: compliance", "      mode: none", "      retain_days: 30", "",
			"    targets: [disk, s3a, s3b]", "    targets: [disk, s3a, sftp]"},
			[]string{`target "sftp" is of kind rclone`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policy.Parse("policy.yaml", []byte(edit(t, withSFTP, tc.edits...)))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if tg := p.Target("sftp"); tg == nil || tg.Kind != policy.KindRclone {
					t.Fatalf("target sftp: %+v", tg)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not hold %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), policy.RuleImmutability) {
				t.Errorf("error %q is not of rule %s", err, policy.RuleImmutability)
			}
		})
	}
}
