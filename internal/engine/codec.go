package engine

import (
	"context"
	"fmt"

	"github.com/taskhub/taskhub/backend"
	"github.com/taskhub/taskhub/internal/history"
	"github.com/taskhub/taskhub/internal/payload"
)

// codec turns history events and messages into stored bytes and back. It is
// where the large-payload policy applies: a payload over the threshold is
// compressed into the payload store and replaced by a reference, and
// references are resolved on the way back, so user code never notices.
type codec struct {
	be        backend.Backend
	threshold int
}

func newCodec(be backend.Backend, threshold int) *codec {
	if threshold <= 0 {
		threshold = payload.ThresholdDefault
	}
	return &codec{be: be, threshold: threshold}
}

// payload returns data as stored under instanceID, externalizing it if large.
func (c *codec) payload(instanceID string, data []byte, out *[]*backend.Payload) []byte {
	enc, blob := payload.Externalize(instanceID, data, c.threshold, newID)
	if blob != nil {
		*out = append(*out, blob)
	}
	return enc
}

// resolve returns the payload behind stored bytes.
func (c *codec) resolve(ctx context.Context, stored []byte) ([]byte, error) {
	return payload.Resolve(ctx, c.be.PayloadGet, stored)
}

func (c *codec) encodeEvent(instanceID string, ev *history.Event, out *[]*backend.Payload) []byte {
	if len(ev.Input) > c.threshold {
		cp := *ev
		cp.Input = c.payload(instanceID, ev.Input, out)
		ev = &cp
	}
	return history.EncodeEvent(ev)
}

func (c *codec) encodeMessage(m *history.Message, out *[]*backend.Payload) []byte {
	if len(m.Event.Input) > c.threshold {
		ev := *m.Event
		ev.Input = c.payload(m.InstanceID, ev.Input, out)
		m = &history.Message{InstanceID: m.InstanceID, ExecutionID: m.ExecutionID, Event: &ev}
	}
	return history.EncodeMessage(m)
}

func (c *codec) decodeEvent(ctx context.Context, data []byte) (*history.Event, error) {
	ev, err := history.DecodeEvent(data)
	if err != nil {
		return nil, err
	}
	if payload.IsRef(ev.Input) {
		if ev.Input, err = c.resolve(ctx, ev.Input); err != nil {
			return nil, fmt.Errorf("%s event %d: %w", ev.Type, ev.Seq, err)
		}
	}
	return ev, nil
}

func (c *codec) decodeMessage(ctx context.Context, data []byte) (*history.Message, error) {
	m, err := history.DecodeMessage(data)
	if err != nil {
		return nil, err
	}
	if m.Event == nil {
		return nil, fmt.Errorf("%w: message without event", history.ErrCorrupt)
	}
	if payload.IsRef(m.Event.Input) {
		if m.Event.Input, err = c.resolve(ctx, m.Event.Input); err != nil {
			return nil, fmt.Errorf("%s message: %w", m.Event.Type, err)
		}
	}
	return m, nil
}
