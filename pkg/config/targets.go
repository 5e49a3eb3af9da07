package config

import (
	"context"
	"fmt"
	"os"

	"github.com/custos-dev/custos/pkg/target"
	"github.com/custos-dev/custos/pkg/target/azure"
	"github.com/custos-dev/custos/pkg/target/fs"
	"github.com/custos-dev/custos/pkg/target/gcs"
	"github.com/custos-dev/custos/pkg/target/lazy"
	"github.com/custos-dev/custos/pkg/target/s3"
	"github.com/custos-dev/custos/pkg/target/stack"
)

// OpenTargets builds every configured target and wraps each with retry, concurrency limits,
// metrics and tracing. This is the one place where those wrappers are composed.
//
// A target that cannot be reached now (a filesystem path that cannot be created, a network
// error) does not fail OpenTargets: its provider is built on first use by a lazy target
// (pkg/target/lazy), whose operations fail with lazy.ErrUnavailable until then, so a worker
// starts and the CLI works while a target is down. Configuration errors still fail at once.
// CheckReachable says whether the classes can still be written.
func (c *Config) OpenTargets(ctx context.Context) ([]target.Target, error) {
	out := make([]target.Target, 0, len(c.Targets))
	fail := func(err error) ([]target.Target, error) {
		for _, t := range out {
			t.Close()
		}
		return nil, err
	}
	for _, tc := range c.Targets {
		t, err := lazy.New(ctx, tc.Kind, tc.Kind+":"+tc.Name, func(ctx context.Context) (target.Target, error) {
			return c.openProvider(ctx, tc)
		})
		if err != nil {
			return fail(fmt.Errorf("target %s: %w", tc.Name, err))
		}
		conc := tc.Concurrency
		if conc <= 0 {
			conc = 16
		}
		out = append(out, stack.Build(t, stack.Config{MaxAttempts: tc.Attempts, MaxPuts: conc, MaxGets: conc}))
	}
	return out, nil
}

// openProvider builds the bare provider of one target; ctx bounds this call only.
func (c *Config) openProvider(ctx context.Context, tc Target) (target.Target, error) {
	switch tc.Kind {
	case "fs":
		return fs.New(c.Path(tc.Path), fs.WithLabel(tc.Name))
	case "s3":
		return s3.New(ctx, s3.Config{Name: tc.Name, Provider: tc.Provider, Endpoint: tc.Endpoint, Account: tc.Account,
			Region: tc.Region, Bucket: tc.Bucket, Prefix: tc.Prefix, UsePathStyle: tc.PathStyle, LockMode: tc.LockMode})
	case "gcs":
		return gcs.New(ctx, gcs.Config{Name: tc.Name, Bucket: tc.Bucket, Prefix: tc.Prefix, Endpoint: tc.Endpoint})
	case "azure":
		// Shared-key credentials, when wanted, come from the environment variables the Azure
		// tools use; otherwise the SDK's DefaultAzureCredential chain applies.
		return azure.New(ctx, azure.Config{Name: tc.Name, AccountURL: tc.Endpoint, Container: tc.Container, Prefix: tc.Prefix,
			AccountName: os.Getenv("AZURE_STORAGE_ACCOUNT"), AccountKey: os.Getenv("AZURE_STORAGE_KEY"),
			SASToken: os.Getenv("AZURE_STORAGE_SAS_TOKEN")})
	default:
		return c.openKind(ctx, tc)
	}
}

// TargetNames maps configured target names (as classes name them) to Target.Name() values.
func (c *Config) TargetNames(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		for _, tc := range c.Targets {
			if tc.Name == n {
				out[i] = tc.Kind + ":" + n
			}
		}
	}
	return out
}
