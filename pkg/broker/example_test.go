package broker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custos-dev/custos/pkg/broker"
)

// A service binds to its stream at start; only the admin changes it.
func ExampleEnsure() {
	dir, _ := os.MkdirTemp("", "broker-example")
	defer os.RemoveAll(dir)
	srv, _ := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
		Users: []*server.User{
			{Username: "admin", Password: "a"},
			// The service may look the stream up and receive replies, nothing else.
			{Username: "service", Password: "s", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{"$JS.API.STREAM.INFO.ORDERS"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
			}},
		}})
	go srv.Start()
	srv.ReadyForConnections(10 * time.Second)
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	connect := func(user, pw string) jetstream.JetStream {
		nc, _ := nats.Connect(srv.ClientURL(), nats.UserInfo(user, pw), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		js, _ := jetstream.New(nc)
		return js
	}
	admin, service := connect("admin", "a"), connect("service", "s")
	defer admin.Conn().Close()
	defer service.Conn().Close()
	ctx := context.Background()
	cfg := jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, MaxAge: time.Hour}

	// Before the admin provisioned it, the service may not create it: it is told why at once.
	_, err := broker.Ensure(ctx, service, cfg)
	fmt.Println(errors.Is(err, broker.ErrDenied), errors.Is(err, nats.ErrPermissionViolation))

	// The admin creates it (custos setup); the service then binds, even with another setting.
	if _, err := broker.Apply(ctx, admin, cfg); err != nil {
		panic(err)
	}
	cfg.MaxAge = 2 * time.Hour
	s, err := broker.Ensure(ctx, service, cfg)
	fmt.Println(s.CachedInfo().Config.MaxAge, err)
	// Output:
	// true true
	// 1h0m0s <nil>
}
