package azure_test

import (
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/custos-dev/custos/pkg/internal/emulator"
	"github.com/custos-dev/custos/pkg/target/azure"
)

// Azurite's well-known development account. The key is published with Azurite and is
// accepted by nothing but the emulator.
const (
	devAccount = "devstoreaccount1"
	devKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// azuriteMain is the blob service entry point of Azurite as installed by
// deploy/emulators/azure/install.sh, relative to the tools directory.
const azuriteMain = "azurite/node_modules/azurite/dist/src/blob/main.js"

// azurite is one Azurite blob service, with an SDK client of the test's own for setting up
// containers and looking behind the target's back.
type azurite struct {
	proc       *emulator.Process
	location   string // Azurite's data directory
	accountURL string
	svc        *service.Client
}

// startAzurite runs Azurite's blob service on a random port with its data in a fresh
// directory; the process is killed when the test ends. A missing Azurite fails the test.
func startAzurite(t testing.TB) *azurite {
	t.Helper()
	main := emulator.Tool(t, azuriteMain)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("Azurite needs node: %v", err)
	}
	port := emulator.FreePort(t)
	location := t.TempDir() // created before Start, so removed after the process is stopped
	proc := emulator.Start(t, emulator.Spec{
		Name: "azurite",
		Path: node,
		Args: []string{
			main,
			"--blobHost", "127.0.0.1",
			"--blobPort", strconv.Itoa(port),
			"--location", location,
			"--disableTelemetry",
			// The SDK speaks a newer API version than Azurite knows.
			"--skipApiVersionCheck",
			// Longer than the client's 90 s idle timeout, so the client always closes an idle
			// connection first and never sends a request on one the server is closing.
			"--blobKeepAliveTimeout", "120",
		},
		Port: port,
	})
	az := &azurite{proc: proc, location: location, accountURL: fmt.Sprintf("http://%s/%s", proc.Addr(), devAccount)}

	cred, err := service.NewSharedKeyCredential(devAccount, devKey)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	az.svc, err = service.NewClientWithSharedKeyCredential(az.accountURL, cred, &service.ClientOptions{
		ClientOptions: azcore.ClientOptions{
			Transport: &http.Client{Transport: tr},
			Retry:     policy.RetryOptions{MaxRetries: -1},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return az
}

var containerSeq atomic.Int64

// newContainer creates an empty container and returns its name.
func (az *azurite) newContainer(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("c%06d", containerSeq.Add(1))
	if _, err := az.svc.CreateContainer(t.Context(), name, nil); err != nil {
		t.Fatalf("create container %s: %v", name, err)
	}
	return name
}

func (az *azurite) container(name string) *container.Client { return az.svc.NewContainerClient(name) }

// config returns a Config for a fresh container with the development account's shared key.
func (az *azurite) config(t testing.TB) azure.Config {
	t.Helper()
	return azure.Config{
		AccountURL:  az.accountURL,
		Container:   az.newContainer(t),
		AccountName: devAccount,
		AccountKey:  devKey,
	}
}

// open opens cfg and closes the target when the test ends.
func open(t testing.TB, cfg azure.Config) *azure.Target {
	t.Helper()
	tg, err := azure.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}
