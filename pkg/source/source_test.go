package source

import (
	"context"
	"errors"
	"io"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRangesCoverEveryIDOnce(t *testing.T) {
	ids := []string{"", "0", "1", "10", "100", "2", "a", "a\x00", "b", "zz", "\xff"}
	for _, points := range [][]string{nil, {"b"}, {"b", "a", "b", ""}, {"1", "10", "2", "zz"}} {
		rs := Ranges(points)
		for _, id := range ids {
			n := 0
			for _, r := range rs {
				if r.Contains(id) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("points %q: id %q is in %d ranges %v", points, id, n, rs)
			}
		}
		for _, r := range rs {
			if err := r.Validate(); err != nil {
				t.Errorf("points %q: %v", points, err)
			}
		}
	}
}

func TestRequestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  Request
		ok   bool
	}{
		{"full", Request{DataClass: "critical", Method: Full}, true},
		{"incremental", Request{DataClass: "critical", Method: Incremental, Cursor: []byte("x")}, true},
		{"no class", Request{Method: Full}, false},
		{"no method", Request{DataClass: "critical"}, false},
		{"incremental without cursor", Request{DataClass: "critical", Method: Incremental}, false},
		{"empty range", Request{DataClass: "critical", Method: Full, Range: CustomerRange{From: "b", To: "a"}}, false},
	} {
		err := tc.req.Validate()
		if tc.ok != (err == nil) {
			t.Errorf("%s: Validate() = %v", tc.name, err)
		}
		if err != nil && (!errors.Is(err, ErrInvalidRequest) || !errors.Is(err, ErrPermanent)) {
			t.Errorf("%s: %v does not match ErrInvalidRequest and ErrPermanent", tc.name, err)
		}
	}
}

func TestRecordBody(t *testing.T) {
	r := Record{Data: []byte("hello")}
	rc, err := r.Body(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	if string(b) != "hello" {
		t.Fatalf("Body = %q", b)
	}
}
