package config

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/source/httpexport"
	"github.com/custos-dev/custos/pkg/source/postgres"
)

// Source is one system data classes are read from for scheduled, manual and compliance
// snapshots (docs/sources.md).
//
// Credentials are never part of this file: DSNEnv and AuthEnv name environment variables that
// hold them, read when the sources are opened.
type Source struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"` // postgres or http
	// Classes maps data class names (as in the top-level classes) to what to read for them.
	Classes map[string]SourceClass `yaml:"classes"`

	// postgres: DSNEnv names the environment variable holding the DSN. Required.
	DSNEnv string `yaml:"dsn_env"`
	// postgres: InFlightWait bounds the wait for transactions open when an incremental snapshot
	// starts (default one minute); MaxConns bounds the connection pool (default 4).
	InFlightWait time.Duration `yaml:"in_flight_wait"`
	MaxConns     int32         `yaml:"max_conns"`

	// http: Tenant is the tenant of records that do not name one.
	Tenant string `yaml:"tenant"`
	// http: AuthHeader names the request header carrying the credential, which is the value of
	// the environment variable AuthEnv. Both or neither.
	AuthHeader string `yaml:"auth_header"`
	AuthEnv    string `yaml:"auth_env"`
	// http: PageSize is the number of records asked for per page (default 500).
	PageSize int `yaml:"page_size"`
}

// SourceClass is what one data class reads from a source.
type SourceClass struct {
	// postgres: Tenant is the tenant of every record, unless a table sets tenant_column.
	Tenant string `yaml:"tenant"`
	// postgres: Incremental says how incremental snapshots find changes: "column" (default) or
	// "xmin".
	Incremental string `yaml:"incremental"`
	// postgres: Tables are read in order.
	Tables []SourceTable `yaml:"tables"`

	// http: URL is the class's export endpoint. Required.
	URL string `yaml:"url"`
}

// SourceTable is one table or query of a postgres class; the fields are those of
// postgres.Table.
type SourceTable struct {
	Name           string   `yaml:"name"`
	Schema         string   `yaml:"schema"`
	Table          string   `yaml:"table"`
	Query          string   `yaml:"query"`
	Columns        []string `yaml:"columns"`
	ValueColumn    string   `yaml:"value_column"`
	CustomerColumn string   `yaml:"customer_column"`
	KeyColumns     []string `yaml:"key_columns"`
	TenantColumn   string   `yaml:"tenant_column"`
	ChangeColumn   string   `yaml:"change_column"`
	DeletedColumn  string   `yaml:"deleted_column"`
}

// envName is what an environment variable name looks like. Checking it catches a DSN or token
// pasted where its variable's name belongs, before an error message could repeat it.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// validateSources checks the sources section and returns the sources by name, for the classes'
// references.
func (c *Config) validateSources() (map[string]Source, []error) {
	var errs []error
	byName := map[string]Source{}
	for i, s := range c.Sources {
		at := fmt.Sprintf("sources[%d] %q", i, s.Name)
		switch {
		case s.Name == "":
			at = fmt.Sprintf("sources[%d]", i)
			errs = append(errs, fmt.Errorf("%s: name is required", at))
		case byName[s.Name].Name != "":
			errs = append(errs, fmt.Errorf("sources[%d]: duplicate name %q", i, s.Name))
		default:
			byName[s.Name] = s
		}
		if len(s.Classes) == 0 {
			errs = append(errs, fmt.Errorf("%s: no classes", at))
		}
		if s.InFlightWait < 0 || s.MaxConns < 0 || s.PageSize < 0 {
			errs = append(errs, fmt.Errorf("%s: in_flight_wait, max_conns and page_size must not be negative", at))
		}
		// Settings of the other kind would be ignored silently: refuse them instead.
		var misplaced []string
		flag := func(name string, set bool) {
			if set {
				misplaced = append(misplaced, name)
			}
		}
		switch s.Kind {
		case "postgres":
			switch {
			case s.DSNEnv == "":
				errs = append(errs, fmt.Errorf("%s: dsn_env is required for kind postgres", at))
			case !envName.MatchString(s.DSNEnv):
				errs = append(errs, fmt.Errorf("%s: dsn_env must be the name of an environment variable (letters, digits, '_'), not the DSN itself", at))
			}
			flag("tenant", s.Tenant != "")
			flag("auth_header", s.AuthHeader != "")
			flag("auth_env", s.AuthEnv != "")
			flag("page_size", s.PageSize != 0)
			for _, name := range slices.Sorted(maps.Keys(s.Classes)) {
				cl := s.Classes[name]
				switch postgres.Mode(cl.Incremental) {
				case "", postgres.ByColumn, postgres.ByXmin:
				default:
					errs = append(errs, fmt.Errorf("%s: classes.%s: unknown incremental %q (supported: column, xmin)", at, name, cl.Incremental))
				}
				if len(cl.Tables) == 0 {
					errs = append(errs, fmt.Errorf("%s: classes.%s: tables are required for kind postgres", at, name))
				}
				flag("classes."+name+".url", cl.URL != "")
			}
		case "http":
			switch {
			case (s.AuthHeader == "") != (s.AuthEnv == ""):
				errs = append(errs, fmt.Errorf("%s: auth_header and auth_env go together", at))
			case s.AuthEnv != "" && !envName.MatchString(s.AuthEnv):
				errs = append(errs, fmt.Errorf("%s: auth_env must be the name of an environment variable (letters, digits, '_'), not the credential itself", at))
			}
			flag("dsn_env", s.DSNEnv != "")
			flag("in_flight_wait", s.InFlightWait != 0)
			flag("max_conns", s.MaxConns != 0)
			for _, name := range slices.Sorted(maps.Keys(s.Classes)) {
				cl := s.Classes[name]
				if cl.URL == "" {
					errs = append(errs, fmt.Errorf("%s: classes.%s: url is required for kind http", at, name))
				}
				flag("classes."+name+".tenant", cl.Tenant != "")
				flag("classes."+name+".incremental", cl.Incremental != "")
				flag("classes."+name+".tables", len(cl.Tables) != 0)
			}
		default:
			errs = append(errs, fmt.Errorf("%s: unknown kind %q (supported: postgres, http)", at, s.Kind))
		}
		if len(misplaced) > 0 {
			errs = append(errs, fmt.Errorf("%s: %s: not a setting of kind %s", at, strings.Join(misplaced, ", "), s.Kind))
		}
	}
	return byName, errs
}

// OpenSources builds every configured source and returns, for each data class that names a
// source, the source to read it from: what a worker needs to run snapshots. The returned func
// closes every source; snapshots must be closed first. log receives the sources' warnings (nil:
// slog.Default()).
func (c *Config) OpenSources(log *slog.Logger) (map[string]source.Source, func() error, error) {
	if log == nil {
		log = slog.Default()
	}
	opened := map[string]openedSource{}
	closeAll := func() error {
		var errs []error
		for _, s := range opened {
			errs = append(errs, s.Close())
		}
		return errors.Join(errs...)
	}
	for _, sc := range c.Sources {
		s, err := openSource(sc, log.With("source", sc.Name))
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("source %s: %w", sc.Name, err)
		}
		opened[sc.Name] = s
	}
	out := map[string]source.Source{}
	for name, cl := range c.Classes {
		if cl.Source != "" {
			out[name] = opened[cl.Source]
		}
	}
	return out, closeAll, nil
}

// openedSource is what every connector's New returns.
type openedSource interface {
	source.Source
	Close() error
}

// openSource builds one source. Errors name environment variables, never their values.
func openSource(sc Source, log *slog.Logger) (openedSource, error) {
	switch sc.Kind {
	case "postgres":
		dsn := os.Getenv(sc.DSNEnv)
		if dsn == "" {
			return nil, fmt.Errorf("environment variable %s (dsn_env) is not set or empty", sc.DSNEnv)
		}
		classes := make(map[string]postgres.Class, len(sc.Classes))
		for name, cl := range sc.Classes {
			tables := make([]postgres.Table, len(cl.Tables))
			for i, t := range cl.Tables {
				// A conversion, so that a field added to postgres.Table breaks the build here
				// until SourceTable has it too.
				tables[i] = postgres.Table(t)
			}
			classes[name] = postgres.Class{Tenant: cl.Tenant, Incremental: postgres.Mode(cl.Incremental), Tables: tables}
		}
		s, err := postgres.New(postgres.Config{DSN: dsn, Classes: classes, InFlightWait: sc.InFlightWait,
			MaxConns: sc.MaxConns, Logger: log})
		if err != nil {
			return nil, err // not s: a nil *postgres.Source would make a non-nil interface
		}
		return s, nil
	case "http":
		if sc.AuthEnv != "" && os.Getenv(sc.AuthEnv) == "" {
			return nil, fmt.Errorf("environment variable %s (auth_env) is not set or empty", sc.AuthEnv)
		}
		endpoints := make(map[string]string, len(sc.Classes))
		for name, cl := range sc.Classes {
			endpoints[name] = cl.URL
		}
		s, err := httpexport.New(httpexport.Config{Endpoints: endpoints, Tenant: sc.Tenant,
			AuthHeader: sc.AuthHeader, AuthEnv: sc.AuthEnv, PageSize: sc.PageSize})
		if err != nil {
			return nil, err
		}
		return s, nil
	default:
		return nil, fmt.Errorf("unknown kind %q", sc.Kind)
	}
}
