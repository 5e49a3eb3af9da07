package rclone_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/rclone"
)

// A backend message that quotes a secret is cleaned; the error still matches what it wraps.
func TestRedact(t *testing.T) {
	cause := fmt.Errorf("%w: login with password s3cr3t-pass failed", target.ErrPermanent)
	err := rclone.Redact(cause, map[string]string{"pass": "s3cr3t-pass", "short": "abc"})
	if got := err.Error(); got != "permanent target error: login with password [secret] failed" {
		t.Errorf("message %q", got)
	}
	if !errors.Is(err, target.ErrPermanent) {
		t.Error("the redacted error no longer matches ErrPermanent")
	}
	if rclone.Redact(cause, map[string]string{"other": "nothing-like-it"}) != cause {
		t.Error("an error without secrets was replaced")
	}
}
