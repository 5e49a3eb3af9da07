package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/erasure"
	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/producer"
	"github.com/custos-dev/custos/pkg/repository"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

func eraseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "erase",
		Short: "Request, cancel and follow customer erasures; show their signed deletion certificates",
		Long: `An erasure destroys a customer's data key (crypto-shredding) after writing an erasure record to
every target; the broker keeps no readable copy (docs/design.md section 12). With erasure.grace
set, the request waits that long and "erase cancel" can stop it. With erasure.requesters set,
only requests signed by a listed identity are carried out ("erase identity new" makes one).`,
	}
	cmd.AddCommand(eraseRequestCmd(), eraseCancelCmd(), eraseStatusCmd(), eraseIdentityCmd())
	return cmd
}

func eraseRequestCmd() *cobra.Command {
	var tenant, customer, class, by, identity, basis string
	cmd := &cobra.Command{
		Use:   "request --tenant T --customer C --requested-by NAME [--identity FILE]",
		Short: "Publish a deletion request (signed with --identity)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tenant == "" || customer == "" || by == "" {
				return errors.New("--tenant, --customer and --requested-by are required")
			}
			var opts []producer.PublishOption
			if identity != "" {
				key, err := readIdentity(identity)
				if err != nil {
					return err
				}
				opts = append(opts, producer.WithSignature(by, key))
			}
			parts, err := openParts(cmd, "custos-erase")
			if err != nil {
				return err
			}
			defer parts.Close()
			p, err := producer.New(parts.JS, "urn:custos:cli")
			if err != nil {
				return err
			}
			msg := &custosv1.DeletionRequest{Meta: &custosv1.Meta{Tenant: tenant, CustomerId: customer, DataClass: class},
				RequestedBy: by, LegalBasis: basis}
			if _, err := p.PublishDeletionRequest(cmd.Context(), msg, opts...); err != nil {
				return err
			}
			fmt.Printf("erasure requested customer=%s event=%s signed=%v\n",
				parts.KMS.Pseudonym(tenant, customer), msg.GetMeta().GetEventId(), identity != "")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&tenant, "tenant", "", "tenant of the customer")
	f.StringVar(&customer, "customer", "", "customer id")
	f.StringVar(&class, "class", "", "data class (empty: every class)")
	f.StringVar(&by, "requested-by", "", "identity of the requester (the --identity's name when signed)")
	f.StringVar(&identity, "identity", "", `signing identity file made by "custos erase identity new"`)
	f.StringVar(&basis, "legal-basis", "", "legal basis, e.g. gdpr_art17")
	return cmd
}

func eraseCancelCmd() *cobra.Command {
	var tenant, customer, by string
	cmd := &cobra.Command{
		Use:   "cancel --tenant T --customer C --by NAME",
		Short: "Cancel an erasure still in its grace period",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tenant == "" || customer == "" || by == "" {
				return errors.New("--tenant, --customer and --by are required")
			}
			parts, st, err := openErasures(cmd)
			if err != nil {
				return err
			}
			defer parts.Close()
			r, err := st.Cancel(cmd.Context(), parts.KMS.Pseudonym(tenant, customer), by, time.Now())
			if err != nil {
				return err
			}
			fmt.Printf("erasure cancelled customer=%s erasure=%s by=%s\n", r.Customer, r.ID, by)
			return nil
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant of the customer")
	cmd.Flags().StringVar(&customer, "customer", "", "customer id")
	cmd.Flags().StringVar(&by, "by", "", "who cancels (kept in the request)")
	return cmd
}

func eraseStatusCmd() *cobra.Command {
	var tenant, customer, from string
	cmd := &cobra.Command{
		Use:   "status --tenant T --customer C",
		Short: "Show a customer's erasure and verify its deletion certificate",
		Long: `Prints the request's state and, once carried out, the deletion certificate and whether its
signature verifies under this deployment's certificate key (exit 2 if it does not).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tenant == "" || customer == "" {
				return errors.New("--tenant and --customer are required")
			}
			if from != "" {
				return certificatesFromTarget(cmd, from, tenant, customer)
			}
			parts, st, err := openErasures(cmd)
			if err != nil {
				return err
			}
			defer parts.Close()
			r, _, err := st.Get(cmd.Context(), parts.KMS.Pseudonym(tenant, customer))
			if err != nil {
				return err
			}
			return printErasure(r, parts.KMS.SigningKey(keys.PurposeErasureCertificate).Public().(ed25519.PublicKey))
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant of the customer")
	cmd.Flags().StringVar(&customer, "customer", "", "customer id")
	cmd.Flags().StringVar(&from, "from-target", "", "read the certificates from this target, with no broker")
	return cmd
}

// openErasures connects the configured parts and the erasure requests.
func openErasures(cmd *cobra.Command) (*config.Parts, *erasure.Store, error) {
	parts, err := openParts(cmd, "custos-erase")
	if err != nil {
		return nil, nil, err
	}
	st, err := erasure.Open(cmd.Context(), parts.JS, 1)
	if err != nil {
		parts.Close()
		return nil, nil, err
	}
	return parts, st, nil
}

// certificatesFromTarget verifies the deletion certificates one target holds for a customer.
func certificatesFromTarget(cmd *cobra.Command, from, tenant, customer string) error {
	cfgPath, _ := cmd.Flags().GetString("config")
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	off, err := cfg.OpenOffline(cmd.Context())
	if err != nil {
		return err
	}
	defer off.Close()
	src, _, err := config.FindTarget(off.Targets, from)
	if err != nil {
		return err
	}
	pseudo := off.KMS.Pseudonym(tenant, customer)
	certs, err := repository.ReadCertificates(cmd.Context(), src, pseudo)
	if err != nil {
		return err
	}
	if len(certs) == 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%s holds no deletion certificate for %s", src.Name(), pseudo)}
	}
	pub := off.KMS.SigningKey(keys.PurposeErasureCertificate).Public().(ed25519.PublicKey)
	for id, b := range certs {
		var s erasure.Signed
		if err := json.Unmarshal(b, &s); err != nil {
			return &exitError{code: 2, msg: fmt.Sprintf("certificate %s in %s: not a signed certificate", id, src.Name())}
		}
		c, err := s.Verify(pub)
		if err != nil {
			return &exitError{code: 2, msg: fmt.Sprintf("certificate %s in %s: %v", id, src.Name(), err)}
		}
		out, _ := json.MarshalIndent(c, "", "  ")
		fmt.Printf("certificate %s in %s signature OK (key %s)\n%s\n", id, src.Name(), erasure.KeyFingerprint(pub), out)
	}
	return nil
}

// printErasure prints a request and verifies its certificate against pub.
func printErasure(r erasure.Request, pub ed25519.PublicKey) error {
	fmt.Printf("erasure %s customer=%s state=%s requested_by=%s verified_requester=%v requested=%s due=%s\n",
		r.ID, r.Customer, r.State, r.RequestedBy, r.Verified, r.RequestedAt.Format(time.RFC3339), r.DueAt.Format(time.RFC3339))
	if r.CancelledBy != "" {
		fmt.Printf("cancelled_by=%s\n", r.CancelledBy)
	}
	if r.Certificate == nil {
		return nil
	}
	c, err := r.Certificate.Verify(pub)
	if err != nil {
		return &exitError{code: 2, msg: fmt.Sprintf("certificate %s: %v", r.ID, err)}
	}
	out, _ := json.MarshalIndent(c, "", "  ")
	fmt.Printf("certificate %s signature OK (key %s)\n%s\n", c.ID, erasure.KeyFingerprint(pub), out)
	return nil
}

// erasedLines names the certificate of each erased customer a restore skipped.
func erasedLines(ctx context.Context, js jetstream.JetStream, erased []string) {
	if len(erased) == 0 {
		return
	}
	st, err := erasure.Open(ctx, js, 1)
	for _, c := range erased {
		id := "no certificate in the broker"
		if err == nil {
			if r, _, gerr := st.Get(ctx, c); gerr == nil {
				id = "certificate " + r.ID
			}
		}
		fmt.Fprintf(os.Stderr, "ERASED: %s was erased (%s); nothing restored for it\n", c, id)
	}
}

func eraseIdentityCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "identity", Short: "Signing identities for deletion requests"}
	var name, out string
	newCmd := &cobra.Command{
		Use:   "new --name NAME --out FILE",
		Short: "Make an Ed25519 identity and print the erasure.requesters entry that trusts it",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if name == "" || out == "" {
				return errors.New("--name and --out are required")
			}
			pub, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s exists: an identity is never overwritten", out)
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(f, base64.StdEncoding.EncodeToString(priv.Seed()))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			fmt.Printf("# add to custos.yaml under erasure.requesters:\n- name: %s\n  public_key: %s\n",
				name, base64.StdEncoding.EncodeToString(pub))
			return nil
		},
	}
	newCmd.Flags().StringVar(&name, "name", "", "the identity's name (requested_by of its requests)")
	newCmd.Flags().StringVar(&out, "out", "", "file to write the private key to (mode 0600)")
	cmd.AddCommand(newCmd)
	return cmd
}

func readIdentity(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("identity %s: not an identity file (base64 Ed25519 seed)", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
