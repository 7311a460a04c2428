package runner

import "testing"

func TestMessageKind(t *testing.T) {
	for subject, want := range map[string]string{
		"privacy.request.submitted":                       "submitted",
		"privacy.request.executed":                        "executed",
		"privacy.request.resume":                          "resume",
		"privacy.request.timer.fire.pause.0123456789ab":   "timer.pause",
		"privacy.request.timer.fire.execution.0123456789": "timer.execution",
	} {
		if got := messageKind(subject); got != want {
			t.Errorf("messageKind(%q) = %q, want %q", subject, got, want)
		}
	}
}
