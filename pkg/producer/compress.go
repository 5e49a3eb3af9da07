package producer

import (
	"runtime"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/custos-dev/custos/pkg/event"
	custosv1 "github.com/custos-dev/custos/proto/custos/v1"
)

// encoder is shared by every producer of the process; EncodeAll is safe for concurrent use.
var encoder = sync.OnceValue(func() *zstd.Encoder {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithLowerEncoderMem(true))
	if err != nil {
		panic("producer: zstd encoder: " + err.Error()) // only for invalid options
	}
	return enc
})

// compressed returns a copy of msg whose inline records of at least compressFrom bytes are
// zstd-compressed (record.inline_zstd), or nil when there is none or it would not be smaller.
// A record over the inline limit is left as is, so that validation names the real size. The
// copy shares every field but the records it changes with msg (neither is written to again):
// a deep copy would copy each record's bytes only to drop them.
func (p *Producer) compressed(msg proto.Message) proto.Message {
	from := p.o.compressFrom
	if from <= 0 {
		return nil
	}
	recs := recordsOf(msg)
	limit := p.o.limits.MaxInlineBytes
	if limit <= 0 {
		limit = event.DefaultMaxInlineBytes
	}
	var zs [][]byte // compressed bytes by record, nil where a record travels as it is
	for i, r := range recs {
		data := r.GetInline()
		if len(data) < from || len(data) > limit {
			continue
		}
		z := encoder().EncodeAll(data, make([]byte, 0, len(data)/2))
		if len(z) >= len(data) {
			continue // incompressible: send it as is
		}
		if zs == nil {
			zs = make([][]byte, len(recs))
		}
		zs[i] = z
	}
	if zs == nil {
		return nil
	}
	swap := func(rs []*custosv1.Record) []*custosv1.Record {
		out := slices.Clone(rs)
		for i, z := range zs {
			if z != nil {
				out[i] = shallowCopy(rs[i])
				out[i].Source = &custosv1.Record_InlineZstd{InlineZstd: z}
			}
		}
		return out
	}
	switch m := msg.(type) {
	case *custosv1.PostTransaction:
		out := shallowCopy(m)
		out.Record = swap([]*custosv1.Record{m.GetRecord()})[0]
		return out
	case *custosv1.ManualRequest:
		out := shallowCopy(m)
		out.Records = swap(m.GetRecords())
		return out
	case *custosv1.SuspiciousActivity:
		out := shallowCopy(m)
		out.Records = swap(m.GetRecords())
		return out
	}
	return nil // recordsOf knows no other type
}

// shallowCopy returns a new message with m's fields; message, list, map and bytes fields share
// m's values.
func shallowCopy[M proto.Message](m M) M {
	src := m.ProtoReflect()
	dst := src.New()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		dst.Set(fd, v)
		return true
	})
	if u := src.GetUnknown(); len(u) > 0 {
		dst.SetUnknown(u)
	}
	return dst.Interface().(M)
}

func recordsOf(msg proto.Message) []*custosv1.Record {
	switch m := msg.(type) {
	case *custosv1.PostTransaction:
		return []*custosv1.Record{m.GetRecord()}
	case *custosv1.ManualRequest:
		return m.GetRecords()
	case *custosv1.SuspiciousActivity:
		return m.GetRecords()
	}
	return nil
}
