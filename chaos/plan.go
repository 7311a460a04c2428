package chaos

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// PolicyKey is the policy every request of the suite names.
const PolicyKey = "chaos"

// Behaviour of a webhook's receiver.
type Behaviour int

// Behaviours.
const (
	// Plain answers 200, or 503 at random.
	Plain Behaviour = iota
	// Halt answers {"halt": true, "derived_identity": {"phone_number": ..., "crm_id": {...}}} and posts the
	// reply-to-token back, right after its answer or seconds later.
	Halt
	// Derive answers {"derived_identity": {"email": ...}} without halting, or 503 at random.
	Derive
	// Eligible answers a pre-approval call 200, or 503 at random, and after a 200 posts the call's
	// reply-to-token to its reply-to-eligible URL, right after its answer or seconds later.
	Eligible
)

// Host names the receiver (one HTTPS server each) a webhook calls.
type Host string

// Hosts.
const (
	HostFast    Host = "fast"
	HostHalt    Host = "halt"
	HostDerive  Host = "derive"
	HostSlow    Host = "slow" // answers after 1–2.5 s, below WEBHOOK_TIMEOUT
	HostApprove Host = "approve"
)

// Hook is one webhook of the suite's plan; its key is also its connection's key suffix and the
// path its receiver serves it on.
type Hook struct {
	Key string
	// Type is the list the webhook is configured in, and the callback_type of its calls: the
	// global pre-approval list (event.PreApprovalCallback), or the policy's pre_execution
	// (event.Pre) or post_execution (event.Post) list.
	Type      event.CallbackType
	Direction string
	Host      Host
	Behaviour Behaviour
}

// Hooks is the plan of the suite's requests in order: the pre-approval webhook, the policy's
// pre-execution webhooks, then its post-execution ones.
var Hooks = []Hook{
	{Key: "approve", Type: event.PreApprovalCallback, Direction: "two_way", Host: HostApprove, Behaviour: Eligible},
	{Key: "wake", Type: event.Pre, Direction: "one_way", Host: HostFast, Behaviour: Plain},
	{Key: "halt", Type: event.Pre, Direction: "two_way", Host: HostHalt, Behaviour: Halt},
	{Key: "derive", Type: event.Pre, Direction: "two_way", Host: HostDerive, Behaviour: Derive},
	{Key: "slow_pre", Type: event.Pre, Direction: "one_way", Host: HostSlow, Behaviour: Plain},
	{Key: "notify", Type: event.Post, Direction: "one_way", Host: HostFast, Behaviour: Plain},
	{Key: "slow_post", Type: event.Post, Direction: "one_way", Host: HostSlow, Behaviour: Plain},
}

// HookIndex returns the position of key in Hooks, -1 when unknown.
func HookIndex(key string) int {
	for i, h := range Hooks {
		if h.Key == key {
			return i
		}
	}
	return -1
}

// Spec is one privacy request of the stream and what its receivers will do.
type Spec struct {
	ID    string
	Index int
	// Email, DeviceID (fides_user_device_id) and Loyalty (the custom identity loyalty_id) are the
	// submitted identity, in fides's shape; every call and the execute event must carry the last two.
	Email    string
	DeviceID string
	Loyalty  string
	// DerivedPhone and DerivedCRM (the custom identity crm_id) are what the halting webhook derives,
	// DerivedEmail what the derive webhook derives; every later call and the execute event must
	// carry them.
	DerivedPhone string
	DerivedCRM   string
	DerivedEmail string
	// ResumeDelay is how long the halting receiver waits after its answer before posting the
	// token back, ReplyDelay how long the pre-approval receiver waits after its 200 before posting
	// its eligible reply; 0 means right after flushing the answer.
	ResumeDelay time.Duration
	ReplyDelay  time.Duration
}

// Identity is the identity spec is submitted with, in fides's shape: an email, a standard fides
// field and a custom identity.
func (spec Spec) Identity() event.Identity {
	email, device := spec.Email, spec.DeviceID
	return event.Identity{Email: &email, FidesUserDeviceID: &device,
		Custom: map[string]event.LabeledIdentity{"loyalty_id": {Label: "Loyalty ID", Value: spec.Loyalty}}}
}

// MakeSpecs returns n requests; about half resume right after answering, the others 1–3 s later,
// and, drawn apart, about half reply eligible right after answering, the others 1–3 s later.
func MakeSpecs(n int, rng *rand.Rand) []Spec {
	delay := func() time.Duration {
		if rng.IntN(2) == 1 {
			return time.Second + time.Duration(rng.Int64N(int64(2*time.Second)))
		}
		return 0
	}
	specs := make([]Spec, n)
	for i := range specs {
		specs[i] = Spec{
			ID:           fmt.Sprintf("pri_chaos_%05d", i+1),
			Index:        i + 1,
			Email:        fmt.Sprintf("subject-%05d@example.com", i+1),
			DeviceID:     fmt.Sprintf("device-%05d", i+1),
			Loyalty:      fmt.Sprintf("LOY-%05d", i+1),
			DerivedPhone: fmt.Sprintf("+1555%07d", i+1),
			DerivedCRM:   fmt.Sprintf("crm-%05d", i+1),
			DerivedEmail: fmt.Sprintf("derived-%05d@example.net", i+1),
			ResumeDelay:  delay(),
			ReplyDelay:   delay(),
		}
	}
	return specs
}
