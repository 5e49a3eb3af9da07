// Package deadletter holds the format of a dead-lettered event in CUSTOS_DLQ (docs/design.md
// section 12): the rejected body is compressed and sealed under the data key of the customer it
// concerns, so that erasing the customer also erases its rejected events, and split into parts
// when the sealed copy with its headers would not fit the broker's max_payload.
//
// A dead letter is one or more messages on custos.v1.dlq.<type>.<scope>, each with the original
// event's headers (never the Nats-* ones) and:
//
//	Custos-Dlq-Scope:  the key scope that seals the body: the customer's pseudonym, or "dlq"
//	                   when the body names no customer (it could not be parsed)
//	Custos-Dlq-Id:     "dlq-<events stream sequence>", the id every part shares
//	Custos-Dlq-Part:   "<i>/<n>", 1-based
//	Nats-Msg-Id:       "<id>.<i>", so that a repeated dead-lettering stores each part once
//
// The body of part i is the i-th slice of
//
//	sealed = crypto.Seal(DEK(scope), crypto.AAD("custos-dlq-v1", scope, id), random nonce, zstd(body))
//
// Parts carry nothing when the body was dropped (Custos-Dlq-Body says why: the customer was
// erased).
package deadletter

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"

	"github.com/custos-dev/custos/pkg/crypto"
	"github.com/custos-dev/custos/pkg/keys"
)

// Header names of a dead letter, besides the reason headers the worker sets.
const (
	HeaderScope = "Custos-Dlq-Scope"
	HeaderID    = "Custos-Dlq-Id"
	HeaderPart  = "Custos-Dlq-Part"
	// HeaderBody is set when the dead letter holds no body, and says why.
	HeaderBody = "Custos-Dlq-Body"
)

// SystemScope seals bodies that name no customer.
const SystemScope = "dlq"

const aadDomain = "custos-dlq-v1"

// Named errors.
var (
	// ErrNoBody means the dead letter was recorded without its body.
	ErrNoBody = errors.New("deadletter: the dead letter holds no body")
	// ErrIncomplete means parts are missing or do not agree.
	ErrIncomplete = errors.New("deadletter: parts missing or inconsistent")
)

var (
	encoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	decoder, _ = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(64<<20))
)

// Messages builds the parts of one dead letter. hdr holds the headers every part carries
// (copied); subject is the dead-letter subject; dek seals body under scope. maxPayload is the
// broker's limit: each part with its headers stays below it. A nil dek records no body, with
// why in HeaderBody.
func Messages(subject string, hdr nats.Header, id, scope string, dek, body []byte, why string, maxPayload int) ([]*nats.Msg, error) {
	var sealed []byte
	if dek != nil {
		n, err := crypto.RandomNonce()
		if err != nil {
			return nil, err
		}
		if sealed, err = crypto.Seal(dek, crypto.AAD(aadDomain, scope, id), n, encoder.EncodeAll(body, nil)); err != nil {
			return nil, fmt.Errorf("deadletter: seal: %w", err)
		}
	}
	base := size(hdr) + len(subject) + 512 // the part's own headers and framing
	room := maxPayload - base
	if room < 1024 {
		return nil, fmt.Errorf("deadletter: headers of %d bytes leave no room under max_payload %d", base, maxPayload)
	}
	n := max(1, (len(sealed)+room-1)/room)
	out := make([]*nats.Msg, 0, n)
	for i := range n {
		h := nats.Header{}
		for k, v := range hdr {
			h[k] = append([]string(nil), v...)
		}
		h.Set(HeaderScope, scope)
		h.Set(HeaderID, id)
		h.Set(HeaderPart, strconv.Itoa(i+1)+"/"+strconv.Itoa(n))
		h.Set(nats.MsgIdHdr, id+"."+strconv.Itoa(i+1))
		if dek == nil {
			h.Set(HeaderBody, why)
		}
		chunk := sealed[min(len(sealed), i*room):min(len(sealed), (i+1)*room)]
		out = append(out, &nats.Msg{Subject: subject, Header: h, Data: chunk})
	}
	return out, nil
}

// Subject is the dead-letter subject of an event subject's type token and a scope.
func Subject(prefix, eventType, scope string) string { return prefix + eventType + "." + scope }

func size(h nats.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// Part is one message of a dead letter as read back.
type Part struct {
	Header nats.Header
	Data   []byte
}

// Open reassembles the parts of one dead letter (any order) and opens the body with the scope's
// data key from store. It fails with ErrNoBody when none was kept, ErrIncomplete when parts are
// missing, keys.ErrDestroyed when the customer was erased, and crypto.ErrAuth when the bytes
// were changed.
func Open(ctx context.Context, store keys.Store, parts []Part) ([]byte, error) {
	if len(parts) == 0 {
		return nil, ErrIncomplete
	}
	first := parts[0].Header
	if first.Get(HeaderBody) != "" {
		return nil, fmt.Errorf("%w: %s", ErrNoBody, first.Get(HeaderBody))
	}
	id, scope := first.Get(HeaderID), first.Get(HeaderScope)
	byIndex := map[int][]byte{}
	total := 0
	for _, p := range parts {
		i, n, ok := parsePart(p.Header.Get(HeaderPart))
		if !ok || p.Header.Get(HeaderID) != id || p.Header.Get(HeaderScope) != scope || (total != 0 && n != total) {
			return nil, ErrIncomplete
		}
		total = n
		byIndex[i] = p.Data
	}
	if len(byIndex) != total {
		return nil, fmt.Errorf("%w: %d of %d parts", ErrIncomplete, len(byIndex), total)
	}
	idx := make([]int, 0, total)
	for i := range byIndex {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	var sealed []byte
	for _, i := range idx {
		sealed = append(sealed, byIndex[i]...)
	}
	dek, err := store.Lookup(ctx, scope)
	if err != nil {
		return nil, err
	}
	z, err := crypto.Open(dek, crypto.AAD(aadDomain, scope, id), sealed)
	if err != nil {
		return nil, err
	}
	return decoder.DecodeAll(z, nil)
}

func parsePart(v string) (i, n int, ok bool) {
	a, b, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	return i, n, err1 == nil && err2 == nil && i >= 1 && i <= n
}
