package runner

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestConnectionLabelsBounded: the per-connection metrics name the first MaxConnectionLabels
// connection keys and count every other under OtherConnections, so that the series stay bounded.
func TestConnectionLabelsBounded(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	for i := range MaxConnectionLabels + 20 {
		m.observeCall(fmt.Sprintf("conn_%d", i), "done", time.Millisecond)
	}
	m.observeCall("conn_0", "retry", time.Second)
	m.observeCall("conn_late", "refused", time.Second)
	if n := testutil.CollectAndCount(m.connLatency); n != MaxConnectionLabels+1 {
		t.Errorf("%d latency series, want %d (the named keys and %s)", n, MaxConnectionLabels+1, OtherConnections)
	}
	for _, tc := range []struct {
		conn, outcome string
		want          float64
	}{
		{"conn_0", "done", 1}, {"conn_0", "retry", 1},
		{OtherConnections, "done", 20}, {OtherConnections, "refused", 1},
	} {
		if got := testutil.ToFloat64(m.connCalls.WithLabelValues(tc.conn, tc.outcome)); got != tc.want {
			t.Errorf("calls{%s,%s} = %v, want %v", tc.conn, tc.outcome, got, tc.want)
		}
	}
}
