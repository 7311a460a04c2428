package store

import "testing"

// TestClientOptions: majority writes and reads by default, and what the URI says wins.
func TestClientOptions(t *testing.T) {
	for _, tt := range []struct {
		uri         string
		w           any
		readConcern string
		retryWrites bool
	}{
		{"mongodb://h1,h2,h3/?replicaSet=rs0", "majority", "majority", true},
		{"mongodb://h/?w=1&readConcernLevel=local&retryWrites=false", 1, "local", false},
	} {
		o := clientOptions(tt.uri)
		if o.WriteConcern == nil || o.WriteConcern.W != tt.w || o.ReadConcern == nil || o.ReadConcern.Level != tt.readConcern ||
			o.RetryWrites == nil || *o.RetryWrites != tt.retryWrites || o.RetryReads == nil || !*o.RetryReads {
			t.Errorf("%s: w=%v readConcern=%v retryWrites=%v", tt.uri, o.WriteConcern, o.ReadConcern, o.RetryWrites)
		}
	}
}
