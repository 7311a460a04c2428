package natsconn

import "time"

// SetResumeGap sets how long a loss of NATS Follow resumes after, for a test, and returns the
// function that puts it back.
func SetResumeGap(d time.Duration) (restore func()) {
	old := resumeGap
	resumeGap = d
	return func() { resumeGap = old }
}
