package repository

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/custos-dev/custos/pkg/keys"
	"github.com/custos-dev/custos/pkg/target"
)

// EnvelopeName is the name of a scope's key envelope under a KEK: written for every live scope
// when the KEK becomes active by a rotation (docs/design.md section 11, KEK epochs).
func EnvelopeName(kek, scope string) string {
	return EnvelopePrefix + kek + "/" + shard(scope) + "/" + scope
}

// envelopeJSON is a key envelope object: it holds only a wrapped key, no secret.
type envelopeJSON struct {
	V     int    `json:"v"`
	Scope string `json:"scope"`
	KEK   string `json:"kek"`
	DEK   []byte `json:"dek"`
}

// EncodeEnvelope returns the bytes of a scope's key envelope object.
func EncodeEnvelope(scope string, e keys.Envelope) ([]byte, error) {
	return json.Marshal(envelopeJSON{V: 1, Scope: scope, KEK: e.KEK, DEK: e.DEK})
}

// DecodeEnvelope parses a key envelope object and checks that it is the envelope of scope.
func DecodeEnvelope(b []byte, scope string) (keys.Envelope, error) {
	var j envelopeJSON
	if err := json.Unmarshal(b, &j); err != nil || j.V != 1 || j.Scope != scope || j.KEK == "" || len(j.DEK) == 0 {
		return keys.Envelope{}, fmt.Errorf("%w: key envelope of %s", ErrCorrupt, scope)
	}
	return keys.Envelope{KEK: j.KEK, DEK: j.DEK}, nil
}

// EnvelopeReport says what WriteEnvelopes wrote.
type EnvelopeReport struct {
	Written  int      // (scope, target) pairs now holding the envelope
	Failures []string // "target: scope: error"
}

// WriteEnvelopes writes the key envelope of every scope in envs (each wrapped by the active
// KEK) to every target, create-only, with opts (the retention that outlives every older locked
// manifest). An existing envelope with the same bytes counts as written.
func WriteEnvelopes(ctx context.Context, targets []target.Target, envs map[string]keys.Envelope, opts target.PutOptions) EnvelopeReport {
	var rep EnvelopeReport
	var mu sync.Mutex
	type job struct {
		t     target.Target
		scope string
	}
	work := make(chan job)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				e := envs[j.scope]
				b, err := EncodeEnvelope(j.scope, e)
				if err == nil {
					err = putOnce(ctx, j.t, EnvelopeName(e.KEK, j.scope), b, opts)
				}
				mu.Lock()
				if err != nil {
					rep.Failures = append(rep.Failures, fmt.Sprintf("%s: %s: %v", j.t.Name(), j.scope, err))
				} else {
					rep.Written++
				}
				mu.Unlock()
			}
		}()
	}
	for _, t := range targets {
		for scope := range envs {
			work <- job{t, scope}
		}
	}
	close(work)
	wg.Wait()
	return rep
}
