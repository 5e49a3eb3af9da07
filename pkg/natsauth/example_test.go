package natsauth_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/custos-dev/custos/pkg/natsauth"
)

// What a producer may publish, with and without deletion requests reserved.
func ExamplePermissions() {
	for _, reserve := range []bool{false, true} {
		p := natsauth.Permissions(natsauth.Producer, natsauth.Options{ReserveDeletion: reserve})
		fmt.Println(reserve,
			slices.Contains(p.Publish.Allow, "custos.v1.events.post_transaction"),
			slices.Contains(p.Publish.Allow, "custos.v1.events.deletion_request"),
			slices.Contains(p.Publish.Deny, "$JS.API.STREAM.PURGE.>"),
			p.Subscribe.Allow)
	}
	fmt.Println(natsauth.Permissions(natsauth.Admin, natsauth.Options{}) == nil)
	// Output:
	// false true true true [_INBOX.custos.producer.>]
	// true true false true [_INBOX.custos.producer.>]
	// true
}

// Generate writes one seed per role; running it again keeps them.
func ExampleGenerate() {
	dir, _ := os.MkdirTemp("", "natsauth-example")
	defer os.RemoveAll(dir)
	set, err := natsauth.Generate(dir, natsauth.Options{ReserveDeletion: true})
	if err != nil {
		panic(err)
	}
	again, _ := natsauth.Generate(dir, natsauth.Options{})
	for i, u := range set.Users() {
		fmt.Println(u.Role, filepath.Base(u.SeedFile), u.PublicKey == again.Users()[i].PublicKey)
	}
	// The embedded server takes set.ServerUsers(); nats-server takes set.ServerConfig().
	fmt.Println(len(set.ServerUsers()))
	// Output:
	// producer producer.nk true
	// worker worker.nk true
	// scheduler scheduler.nk true
	// admin admin.nk true
	// operator operator.nk true
	// restorer restorer.nk true
	// auditor auditor.nk true
	// 7
}

// A service connects with its role's seed file: the option signs in and sets the role's
// reply-inbox prefix.
func ExampleConnectOption() {
	dir, _ := os.MkdirTemp("", "natsauth-example")
	defer os.RemoveAll(dir)
	set, _ := natsauth.Generate(dir, natsauth.Options{})
	u, _ := set.User(natsauth.Worker)
	opt, err := natsauth.ConnectOption(u.SeedFile)
	fmt.Println(opt != nil, err, natsauth.InboxPrefix(natsauth.Worker))
	// nc, err := nats.Connect(url, opt)
	// Output:
	// true <nil> _INBOX.custos.worker
}
