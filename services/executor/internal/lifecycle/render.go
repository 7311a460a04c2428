package lifecycle

import (
	"fmt"
	"strings"
)

// Markdown renders the three tables as docs/ARCHITECTURE.md shows them; a test keeps the page equal
// to it, so the page cannot drift from the code.
func Markdown() string {
	var b strings.Builder
	b.WriteString("Inputs (`ApplyInput`): what an event or timer records, in one compare-and-set.\n\n")
	b.WriteString("| Row | Input | Status | Step | When | Records |\n|---|---|---|---|---|---|\n")
	for _, r := range inputs {
		kind := string(r.kind)
		if kind == "" {
			kind = "any"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.id, kind, list(r.statuses), list(r.steps), r.when, r.effect)
	}
	b.WriteString("\nAnswers (`ApplyAnswer`): what a webhook call's outcome records. Every answer clears the claim.\n\n")
	b.WriteString("| Row | Answer | Records |\n|---|---|---|\n")
	for _, r := range answers {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.id, r.when, r.effect)
	}
	b.WriteString("\nDecisions (`Decide`): the next action, from the record and the clock (and, for F1 and E0, what the deciding run already did); the first matching row wins.\n\n")
	b.WriteString("| Row | Status | Step | When | Next action |\n|---|---|---|---|---|\n")
	for _, r := range decisions {
		do := r.do.String()
		if r.note != "" {
			do += ": " + r.note
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.id, list(r.statuses), list(r.steps), r.when, do)
	}
	return b.String()
}

// list joins statuses or steps, "any" for nil (a row for every one).
func list[T ~string](xs []T) string {
	if xs == nil {
		return "any"
	}
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = string(x)
	}
	return strings.Join(out, ", ")
}
