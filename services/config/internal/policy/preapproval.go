package policy

import (
	"context"

	"github.com/policyhooks/policyhooks/services/config/internal/connection"
	"github.com/policyhooks/policyhooks/shared/event"
)

// PreApprovalView is the pre-approval webhook API resource (fides's PreApprovalWebhookResponse).
type PreApprovalView struct {
	Key              string                 `json:"key"`
	Name             string                 `json:"name"`
	ConnectionConfig *connection.Connection `json:"connection_config"`
}

// PreApprovalWebhooks returns the pre-approval webhooks in order.
func (s *Service) PreApprovalWebhooks(ctx context.Context) ([]PreApprovalView, error) {
	p, err := s.store.GetPreApproval(ctx)
	if err != nil {
		return nil, err
	}
	return s.preApprovalViews(ctx, p.Pre)
}

// PreApprovalWebhook returns one pre-approval webhook (reading its connection only).
func (s *Service) PreApprovalWebhook(ctx context.Context, key string) (PreApprovalView, error) {
	p, err := s.store.GetPreApproval(ctx)
	if err != nil {
		return PreApprovalView{}, err
	}
	for i, w := range p.Pre {
		if w.Key == key {
			views, err := s.preApprovalViews(ctx, p.Pre[i:i+1])
			if err != nil {
				return PreApprovalView{}, err
			}
			return views[0], nil
		}
	}
	return PreApprovalView{}, &WebhookNotFoundError{Kind: PreApproval, Key: key}
}

// ReplacePreApproval replaces the whole pre-approval list, all or nothing, as ReplaceWebhooks
// replaces a policy's list. Pre-approval webhooks are always two-way: their reply says whether the
// request is eligible; items' Direction is ignored.
func (s *Service) ReplacePreApproval(ctx context.Context, items []WebhookInput) ([]PreApprovalView, error) {
	ins := make([]WebhookInput, len(items))
	for i, in := range items {
		in.Direction = event.TwoWay
		ins[i] = in
	}
	if _, err := Replace(nil, ins); err != nil {
		return nil, err
	}
	for _, in := range ins {
		if err := s.checkConnection(ctx, in.ConnectionKey); err != nil {
			return nil, err
		}
	}
	p, err := s.edit(ctx, PreApprovalKey, func(p *Policy) error {
		ws, err := Replace(p.Pre, ins)
		if err != nil {
			return err
		}
		p.Pre = ws
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.preApprovalViews(ctx, p.Pre)
}

// PatchPreApproval changes the name or the connection (nil: unchanged) of one pre-approval
// webhook and returns it.
func (s *Service) PatchPreApproval(ctx context.Context, key string, name, connectionKey *string) (PreApprovalView, error) {
	if connectionKey != nil {
		if err := s.checkConnection(ctx, *connectionKey); err != nil {
			return PreApprovalView{}, err
		}
	}
	var index int
	p, err := s.edit(ctx, PreApprovalKey, func(p *Policy) error {
		ws, i, _, err := Patch(p.Pre, PreApproval, "", key, Change{Name: name, ConnectionKey: connectionKey})
		if err != nil {
			return err
		}
		index, p.Pre = i, ws
		return nil
	})
	if err != nil {
		return PreApprovalView{}, err
	}
	views, err := s.preApprovalViews(ctx, p.Pre[index:index+1])
	if err != nil {
		return PreApprovalView{}, err
	}
	return views[0], nil
}

// DeletePreApproval removes one pre-approval webhook; the others keep their order.
func (s *Service) DeletePreApproval(ctx context.Context, key string) error {
	_, err := s.edit(ctx, PreApprovalKey, func(p *Policy) error {
		ws, _, err := Remove(p.Pre, PreApproval, "", key)
		if err != nil {
			return err
		}
		p.Pre = ws
		return nil
	})
	return err
}

func (s *Service) preApprovalViews(ctx context.Context, ws []Webhook) ([]PreApprovalView, error) {
	views, err := s.views(ctx, ws)
	if err != nil {
		return nil, err
	}
	out := make([]PreApprovalView, len(views))
	for i, v := range views {
		out[i] = PreApprovalView{Key: v.Key, Name: v.Name, ConnectionConfig: v.ConnectionConfig}
	}
	return out, nil
}
