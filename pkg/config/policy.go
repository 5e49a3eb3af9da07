package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/custos-dev/custos/pkg/policy"
)

// The policy is the one source of truth about data classes: which targets hold each class, how
// many replicas make a backup durable, how long copies stay locked, schedules, retention, RPO
// and RTO. The runtime configuration says only how to reach things: where each target is, which
// source a class is read from. With `policy:` set, Load fills every class's targets, replicas and
// lock time from the policy and refuses a configuration whose wiring would run a class against
// its policy (docs/configuration.md, "The policy").

// Policy returns the policy in force: the file named by `policy:`, or, when the configuration
// names none, the built-in default policy (seed 002), which then only supplies schedules, RPO and
// RTO and is not checked against the runtime classes.
func (c *Config) Policy() *policy.Policy {
	if c.policy != nil {
		return c.policy
	}
	return policy.Default()
}

// PolicyFromFile reports whether the configuration names a policy file, so that its classes
// were checked against it.
func (c *Config) PolicyFromFile() bool { return c.policy != nil }

// loadPolicy reads the policy file named by `policy:` and applies it to the runtime classes.
func (c *Config) loadPolicy() error {
	if c.PolicyFile == "" {
		return nil
	}
	p, err := policy.Load(c.Path(c.PolicyFile))
	if err != nil {
		return err
	}
	if err := c.applyPolicy(p); err != nil {
		return err
	}
	c.policy = p
	return nil
}

// applyPolicy derives each runtime class from the policy and checks the wiring. A value the
// runtime configuration still sets (targets, min_replicas, retain) must agree with the policy;
// it may not weaken it. Every problem names the policy line it breaks.
func (c *Config) applyPolicy(p *policy.Policy) error {
	var errs []error
	at := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", p.File, line, fmt.Sprintf(format, args...)))
	}
	if c.Classes == nil {
		c.Classes = map[string]Class{}
	}
	for name := range c.Classes {
		if p.Class(name) == nil {
			errs = append(errs, fmt.Errorf("classes.%s: the policy %s has no class %q; classes are defined by the policy (its classes: %s)",
				name, p.File, name, strings.Join(p.ClassNames(), ", ")))
		}
	}
	runtime := map[string]Target{}
	for _, t := range c.Targets {
		runtime[t.Name] = t
	}
	for _, pc := range p.Classes {
		rc := c.Classes[pc.Name]
		if len(rc.Targets) > 0 && !sameSet(rc.Targets, pc.Targets) {
			at(pc.Line, "class %q: the runtime configuration lists targets [%s] but the policy requires [%s]; remove classes.%s.targets: the policy says where a class goes",
				pc.Name, strings.Join(rc.Targets, ", "), strings.Join(pc.Targets, ", "), pc.Name)
		}
		if rc.MinReplicas != 0 && rc.MinReplicas < pc.Replicas {
			at(pc.Line, "class %q: min_replicas %d in the runtime configuration is below the policy's replicas %d",
				pc.Name, rc.MinReplicas, pc.Replicas)
		}
		lock := time.Duration(pc.Immutability.RetainDays) * 24 * time.Hour
		if pc.Immutability.Mode != policy.ImmutabilityNone && rc.Retain != 0 && rc.Retain < lock {
			at(pc.Line, "class %q: retain %s in the runtime configuration is shorter than the policy's immutability.retain_days %d",
				pc.Name, rc.Retain, pc.Immutability.RetainDays)
		}
		for _, tn := range pc.Targets {
			pt, rt, ok := p.Target(tn), Target{}, false
			if rt, ok = runtime[tn]; !ok {
				at(pc.Line, "class %q needs target %q (policy line %d), which the runtime configuration does not define; with fewer targets the class breaks its policy (3-2-1, replicas)",
					pc.Name, tn, pt.Line)
				continue
			}
			if kind := policyKind(rt.Kind); kind != pt.Kind {
				at(pt.Line, "target %q is of kind %s in the policy but %s in the runtime configuration", tn, pt.Kind, rt.Kind)
				continue
			}
			if pc.Immutability.Mode == policy.ImmutabilityNone || !lockableKind(pt.Kind) {
				continue
			}
			// A lockable target of a class with immutability must really lock what it is given.
			switch mode := strings.ToUpper(rt.LockMode); {
			case rt.Kind == policy.KindS3 && mode == "":
				at(pc.Line, "class %q needs %s immutability, but target %q (s3) has no lock_mode: its copies would not be locked",
					pc.Name, pc.Immutability.Mode, tn)
			case rt.Kind == policy.KindS3 && pc.Immutability.Mode == policy.ImmutabilityCompliance && mode != "COMPLIANCE":
				at(pc.Line, "class %q needs compliance immutability, but target %q locks in %s mode, which a privileged user can lift",
					pc.Name, tn, mode)
			}
		}
		rc.Targets = slices.Clone(pc.Targets)
		rc.MinReplicas = max(rc.MinReplicas, pc.Replicas)
		if pc.Immutability.Mode != policy.ImmutabilityNone {
			rc.Retain = max(rc.Retain, lock)
		}
		c.Classes[pc.Name] = rc
	}
	return errors.Join(errs...)
}

// policyKind maps a runtime target kind to the policy's kind of storage: kinds registered
// outside pkg (sftp, webdav, rclone remotes) are all rclone to the policy.
func policyKind(kind string) string {
	switch kind {
	case policy.KindFS, policy.KindS3, policy.KindGCS, policy.KindAzure:
		return kind
	}
	return policy.KindRclone
}

func lockableKind(kind string) bool {
	return kind == policy.KindS3 || kind == policy.KindGCS || kind == policy.KindAzure
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// PolicyOr returns the policy a program runs under when it was also given a policy file of its
// own (flagPath, "" for none): the configuration's, which flagPath may only name again; else
// the file flagPath names; nil when neither names one. So no program acts under another policy
// than the workers.
func (c *Config) PolicyOr(flagPath string) (*policy.Policy, error) {
	if flagPath == "" {
		if c.PolicyFromFile() {
			return c.policy, nil
		}
		return nil, nil
	}
	if !c.PolicyFromFile() {
		return policy.Load(flagPath)
	}
	a, errA := os.Stat(c.Path(c.PolicyFile))
	b, errB := os.Stat(flagPath)
	if errA != nil || errB != nil || !os.SameFile(a, b) {
		return nil, fmt.Errorf("--policy %s is not the policy the configuration names (%s): workers run that one; drop --policy", flagPath, c.PolicyFile)
	}
	return c.policy, nil
}
