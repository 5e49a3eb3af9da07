package natsauth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// SeedExt ends the name of every seed file Generate writes: <dir>/<role>.nk.
const SeedExt = ".nk"

// rolePrefix starts the line of a seed file naming its role; ConnectOption reads it.
const rolePrefix = "# custos role: "

// User is the credential of one role.
type User struct {
	Role Role
	// PublicKey is the NKey the server knows the user by ("U...").
	PublicKey string
	// SeedFile holds the private seed, mode 0600. Only the role's clients may read it.
	SeedFile string
}

// Set is one NKey user per role and the permissions they were generated with.
type Set struct {
	opts  Options
	users []User
}

// Generate makes sure dir holds one seed file per role (<dir>/<role>.nk, mode 0600) and
// returns the set. It keeps the seeds already there, so running it again changes no
// credential; a seed file that does not hold a user seed is an error, never overwritten.
func Generate(dir string, opts Options) (*Set, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("natsauth: %w", err)
	}
	s := &Set{opts: opts}
	for _, r := range Roles {
		path := filepath.Join(dir, string(r)+SeedExt)
		pub, err := loadSeed(path)
		if errors.Is(err, fs.ErrNotExist) {
			pub, err = writeSeed(path, r)
		}
		if err != nil {
			return nil, fmt.Errorf("natsauth: %s seed %s: %w", r, path, err)
		}
		s.users = append(s.users, User{Role: r, PublicKey: pub, SeedFile: path})
	}
	return s, nil
}

// loadSeed returns the public key of the user seed in path and makes the file private.
func loadSeed(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	clear(b)
	if err != nil {
		return "", err
	}
	defer kp.Wipe()
	if err := os.Chmod(path, 0o600); err != nil {
		return "", err
	}
	return kp.PublicKey()
}

// writeSeed creates a user key for r and stores it in path, create-only: it is written to a
// temporary file, synced, then linked under its name, so path never holds part of a seed.
func writeSeed(path string, r Role) (string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", err
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return "", err
	}
	defer clear(seed)
	pub, err := kp.PublicKey()
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Custos NATS credential. Keep it secret: it lets its holder act as this role.\n")
	fmt.Fprintf(&b, "%s%s\n# public key: %s\n", rolePrefix, r, pub)
	b.Write(seed)
	b.WriteByte('\n')
	defer clear(b.Bytes())

	tmp, err := os.CreateTemp(filepath.Dir(path), "."+string(r)+"-*.tmp")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", err
	}
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) { // written meanwhile by another run: keep that one
			return loadSeed(path)
		}
		return "", err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return pub, nil
}

// Users returns the users, in the order of Roles.
func (s *Set) Users() []User { return slices.Clone(s.users) }

// User returns the user of role r.
func (s *Set) User(r Role) (User, bool) {
	for _, u := range s.users {
		if u.Role == r {
			return u, true
		}
	}
	return User{}, false
}

// Options returns the options the set was generated with.
func (s *Set) Options() Options { return s.opts }

// ServerUsers returns the users with their permissions, for server.Options.Nkeys of an
// embedded nats-server. With them set, the server refuses clients without a credential.
func (s *Set) ServerUsers() []*server.NkeyUser {
	out := make([]*server.NkeyUser, 0, len(s.users))
	for _, u := range s.users {
		out = append(out, &server.NkeyUser{Nkey: u.PublicKey, Permissions: Permissions(u.Role, s.opts)})
	}
	return out
}

// ServerConfig renders the users as the authorization block of a nats-server configuration
// file (deploy/nats/nats-server.conf includes it as nats-auth.conf).
func (s *Set) ServerConfig() string {
	var b strings.Builder
	b.WriteString("# Custos NATS users, one per role: written by `custos auth generate`; do not edit, generate again.\n")
	fmt.Fprintf(&b, "# Deletion requests reserved to the operator and the admin: %v\n", s.opts.ReserveDeletion)
	b.WriteString("authorization {\n  users = [\n")
	for _, u := range s.users {
		fmt.Fprintf(&b, "    # %s\n    {\n      nkey: %s\n", u.Role, strconv.Quote(u.PublicKey))
		if p := Permissions(u.Role, s.opts); p != nil {
			b.WriteString("      permissions: {\n")
			writeSubjects(&b, "publish", p.Publish)
			writeSubjects(&b, "subscribe", p.Subscribe)
			b.WriteString("      }\n")
		}
		b.WriteString("    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

func writeSubjects(b *strings.Builder, name string, sp *server.SubjectPermission) {
	if sp == nil {
		return
	}
	fmt.Fprintf(b, "        %s: {\n", name)
	for _, l := range []struct {
		name     string
		subjects []string
	}{{"allow", sp.Allow}, {"deny", sp.Deny}} {
		if len(l.subjects) == 0 {
			continue
		}
		fmt.Fprintf(b, "          %s: [\n", l.name)
		for _, subj := range l.subjects {
			// Quoted: an unquoted $ starts a variable reference in the configuration syntax.
			fmt.Fprintf(b, "            %s\n", strconv.Quote(subj))
		}
		b.WriteString("          ]\n")
	}
	b.WriteString("        }\n")
}

// ConnectOption returns the option that connects as the user whose seed is in seedFile. For a
// seed file Generate wrote, it also sets the role's reply-inbox prefix (InboxPrefix), without
// which every request of a non-admin role would go unanswered. The seed is read again at
// each connect and never kept in memory.
func ConnectOption(seedFile string) (nats.Option, error) {
	auth, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		return nil, fmt.Errorf("natsauth: seed %s: %w", seedFile, err)
	}
	role, err := seedRole(seedFile)
	if err != nil {
		return nil, err
	}
	return func(o *nats.Options) error {
		if err := auth(o); err != nil {
			return err
		}
		if role != "" {
			return nats.CustomInboxPrefix(InboxPrefix(role))(o)
		}
		return nil
	}, nil
}

// seedRole reads the role a seed file names; "" when it names none.
func seedRole(path string) (Role, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("natsauth: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name, ok := strings.CutPrefix(sc.Text(), rolePrefix); ok {
			r, err := ParseRole(strings.TrimSpace(name))
			if err != nil {
				return "", fmt.Errorf("natsauth: seed %s: %w", path, err)
			}
			return r, nil
		}
	}
	return "", sc.Err()
}
