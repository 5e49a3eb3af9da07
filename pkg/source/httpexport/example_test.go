package httpexport_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/custos-dev/custos/pkg/source"
	"github.com/custos-dev/custos/pkg/source/httpexport"
)

// An export endpoint of two pages, read in full.
func Example() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("cursor") == "" {
			fmt.Fprint(w, `{"records": [{"customer_id": "c-1", "key": "orders/1", "data": {"total": 12}}], "next": "p2"}`)
			return
		}
		fmt.Fprint(w, `{"records": [{"customer_id": "c-2", "key": "orders/2", "deleted": true}], "watermark": "2024-06-01T00:00:00Z"}`)
	}))
	defer srv.Close()

	src, err := httpexport.New(httpexport.Config{
		Endpoints: map[string]string{"critical": srv.URL + "/export"},
		Tenant:    "acme",
		// AuthHeader: "Authorization", AuthEnv: "SHOP_EXPORT_TOKEN",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	ctx := context.Background()
	snap, err := src.Snapshot(ctx, source.Request{DataClass: "critical", Method: source.Full})
	if err != nil {
		log.Fatal(err)
	}
	defer snap.Close()
	for {
		rec, err := snap.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		if rec.Deleted {
			fmt.Println(rec.CustomerID, rec.Key, "deleted")
			continue
		}
		fmt.Println(rec.CustomerID, rec.Key, string(rec.Data))
	}
	cursor, _ := snap.Cursor()
	fmt.Println(string(cursor))
	// Output:
	// c-1 orders/1 {"total": 12}
	// c-2 orders/2 deleted
	// {"v":1,"class":"critical","watermark":"2024-06-01T00:00:00Z"}
}
