package producer

import (
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

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
// A record over the inline limit is left as is, so that validation names the real size.
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
	var out proto.Message
	var outRecs []*custosv1.Record
	for i, r := range recs {
		data := r.GetInline()
		if len(data) < from || len(data) > limit {
			continue
		}
		z := encoder().EncodeAll(data, make([]byte, 0, len(data)/2))
		if len(z) >= len(data) {
			continue // incompressible: send it as is
		}
		if out == nil {
			out = proto.Clone(msg)
			outRecs = recordsOf(out)
		}
		outRecs[i].Source = &custosv1.Record_InlineZstd{InlineZstd: z}
	}
	return out
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
