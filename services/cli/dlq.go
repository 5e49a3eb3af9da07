package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/custos-dev/custos/pkg/config"
	"github.com/custos-dev/custos/pkg/deadletter"
	"github.com/custos-dev/custos/pkg/event"
	"github.com/custos-dev/custos/pkg/worker"
)

func dlqCmd() *cobra.Command {
	var limit int
	cmd := withLimit(&cobra.Command{
		Use:   "dlq",
		Short: "List dead-lettered events with the reason each was rejected",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfgPath, _ := cmd.Flags().GetString("config")
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			parts, err := open(cmd.Context(), cfg, "custos-dlq")
			if err != nil {
				return err
			}
			defer parts.Close()
			return listDLQ(cmd.Context(), parts.JS, limit)
		},
	}, &limit)
	cmd.AddCommand(dlqShowCmd())
	return cmd
}

func dlqShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show SEQ | SEQ-INDEX",
		Short: "Write the body of the event dead-lettered from events-stream sequence SEQ (entry INDEX of a batch) to standard output",
		Long: `Dead-letter bodies are sealed under the data key of the customer they concern (docs/events.md
section 8): this reassembles the parts and opens the body with the key store. An erased
customer's bodies cannot be opened; nor can one recorded without its body. An entry of a batch
of events (listed with batch=ID#INDEX) is dead-lettered alone: name it SEQ-INDEX.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			parts, err := openParts(cmd, "custos-dlq")
			if err != nil {
				return err
			}
			defer parts.Close()
			ctx := cmd.Context()
			s, err := parts.JS.Stream(ctx, event.DLQStreamName)
			if err != nil {
				return fmt.Errorf("dead-letter stream: %w", err)
			}
			info, err := s.Info(ctx)
			if err != nil {
				return err
			}
			id := "dlq-" + args[0]
			var found []deadletter.Part
			for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
				m, err := s.GetMsg(ctx, seq)
				if errors.Is(err, jetstream.ErrMsgNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				if m.Header.Get(deadletter.HeaderID) == id {
					found = append(found, deadletter.Part{Header: m.Header, Data: m.Data})
				}
			}
			if len(found) == 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("no dead letter from sequence %s", args[0])}
			}
			body, err := deadletter.Open(ctx, parts.Keys, found)
			if err != nil {
				return err
			}
			_, err = os.Stdout.Write(body)
			return err
		},
	}
}

func withLimit(cmd *cobra.Command, limit *int) *cobra.Command {
	cmd.Flags().IntVar(limit, "limit", 100, "show at most this many, newest last")
	return cmd
}

func listDLQ(ctx context.Context, js jetstream.JetStream, limit int) error {
	s, err := js.Stream(ctx, event.DLQStreamName)
	if err != nil {
		return fmt.Errorf("dead-letter stream: %w", err)
	}
	info := s.CachedInfo()
	fmt.Printf("%d dead-lettered events\n", info.State.Msgs)
	if info.State.Msgs == 0 {
		return nil
	}
	start := info.State.FirstSeq
	if info.State.Msgs > uint64(limit) {
		start = info.State.LastSeq - uint64(limit) + 1
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start})
	if err != nil {
		return err
	}
	for n := 0; n < limit; n++ {
		msg, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			return err
		}
		h := msg.Headers()
		batch := "" // an entry of a batch of events: which batch, and where in it
		if id := h.Get(worker.HeaderDLQBatch); id != "" {
			batch = " batch=" + id + "#" + h.Get(worker.HeaderDLQBatchIndex)
		}
		fmt.Printf("%s seq=%s id=%s%s part=%s deliveries=%s reason=%q\n", h.Get(worker.HeaderDLQTime), h.Get(worker.HeaderDLQSeq),
			h.Get(event.HeaderID), batch, h.Get(deadletter.HeaderPart), h.Get(worker.HeaderDLQDeliveries), h.Get(worker.HeaderDLQReason))
		if md, _ := msg.Metadata(); md != nil && md.NumPending == 0 {
			break
		}
	}
	return nil
}
