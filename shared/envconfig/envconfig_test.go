package envconfig

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

const key = "0123456789abcdef0123456789abcdef"

func TestCommonDefaults(t *testing.T) {
	r := New(env(map[string]string{"APP_ENCRYPTION_KEY": key}))
	c := r.Common(":8080")
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if c.NATSURL != "nats://127.0.0.1:4222" || c.HTTPAddr != ":8080" || c.LogLevel != "info" || c.LogFormat != "json" || c.NATSReplicas != 1 {
		t.Fatalf("defaults = %+v", c)
	}
	for _, n := range []string{"1", "3", "5"} {
		r := New(env(map[string]string{"APP_ENCRYPTION_KEY": key, "NATS_REPLICAS": n}))
		if c := r.Common(":1"); r.Err() != nil || c.NATSReplicas != int(n[0]-'0') {
			t.Errorf("NATS_REPLICAS=%s: %+v, %v", n, c, r.Err())
		}
	}
}

func TestErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		read func(r *Reader)
		want string
	}{
		{"missing key", map[string]string{}, func(r *Reader) { r.Common(":1") }, "APP_ENCRYPTION_KEY: is required"},
		{"short key", map[string]string{"APP_ENCRYPTION_KEY": "abc"}, func(r *Reader) { r.Common(":1") }, "APP_ENCRYPTION_KEY: must be exactly 32"},
		{"bad previous", map[string]string{"APP_ENCRYPTION_KEY": key, "APP_ENCRYPTION_KEY_PREVIOUS": "x"}, func(r *Reader) { r.Common(":1") }, "APP_ENCRYPTION_KEY_PREVIOUS"},
		{"bad level", map[string]string{"APP_ENCRYPTION_KEY": key, "LOG_LEVEL": "loud"}, func(r *Reader) { r.Common(":1") }, "LOG_LEVEL: must be one of"},
		{"even replicas", map[string]string{"APP_ENCRYPTION_KEY": key, "NATS_REPLICAS": "2"}, func(r *Reader) { r.Common(":1") }, "NATS_REPLICAS: must be 1, 3 or 5"},
		{"too many replicas", map[string]string{"APP_ENCRYPTION_KEY": key, "NATS_REPLICAS": "7"}, func(r *Reader) { r.Common(":1") }, "NATS_REPLICAS: must be a whole number from 1 to 5"},
		{"short event retention", map[string]string{"APP_ENCRYPTION_KEY": key, "EVENT_RETENTION": "10m"}, func(r *Reader) { r.Common(":1") }, "EVENT_RETENTION: must be at least 1h"},
		{"retention not a duration", map[string]string{"R": "never"}, func(r *Reader) { r.DurationOrForever("R", time.Hour) }, "R: must be a duration"},
		{"negative retention", map[string]string{"R": "-1h"}, func(r *Reader) { r.DurationOrForever("R", time.Hour) }, "R: must be positive"},
		{"negative duration or zero", map[string]string{"R": "-1h"}, func(r *Reader) { r.DurationOrZero("R", time.Hour) }, "R: must be positive"},
		{"forever is not zero", map[string]string{"R": "forever"}, func(r *Reader) { r.DurationOrZero("R", time.Hour) }, "R: must be a duration"},
		{"bad duration", map[string]string{"D": "soon"}, func(r *Reader) { r.Duration("D", time.Second) }, "D: must be a duration"},
		{"negative duration", map[string]string{"D": "-1s"}, func(r *Reader) { r.Duration("D", time.Second) }, "D: must be positive"},
		{"int range", map[string]string{"N": "0"}, func(r *Reader) { r.Int("N", 5, 1, 10) }, "N: must be a whole number from 1 to 10"},
		{"bool", map[string]string{"B": "maybe"}, func(r *Reader) { r.Bool("B", false) }, "B: must be true or false"},
		{"url", map[string]string{"U": "ftp://x"}, func(r *Reader) { r.URL("U", "", "http", "https") }, "U: must be an absolute http/https URL"},
		{"empty list entry", map[string]string{"L": "a,,b"}, func(r *Reader) { r.List("L") }, "L: entry 2 is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(env(tt.env))
			tt.read(r)
			if err := r.Err(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Err() = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestValues(t *testing.T) {
	r := New(env(map[string]string{"D": "604800", "E": "60h", "N": "7", "B": "true", "U": "https://cb.example.com/", "L": " a, b "}))
	if d := r.Duration("D", 0); d != 604800*time.Second {
		t.Errorf("Duration(seconds) = %v", d)
	}
	if d := r.Duration("E", 0); d != 60*time.Hour {
		t.Errorf("Duration(60h) = %v", d)
	}
	for v, want := range map[string]time.Duration{"0": 0, "forever": 0, "Forever": 0, "48h": 48 * time.Hour, "": time.Hour} {
		if d := New(env(map[string]string{"R": v})).DurationOrForever("R", time.Hour); d != want {
			t.Errorf("DurationOrForever(%q) = %v, want %v", v, d, want)
		}
	}
	for v, want := range map[string]time.Duration{"0": 0, "0s": 0, "0h": 0, "90m": 90 * time.Minute, "30": 30 * time.Second, "": time.Hour} {
		if d := New(env(map[string]string{"R": v})).DurationOrZero("R", time.Hour); d != want {
			t.Errorf("DurationOrZero(%q) = %v, want %v", v, d, want)
		}
	}
	if c := New(env(map[string]string{"APP_ENCRYPTION_KEY": key})).Common(":1"); c.EventRetention != DefaultEventRetention {
		t.Errorf("EventRetention by default = %v", c.EventRetention)
	}
	if c := New(env(map[string]string{"APP_ENCRYPTION_KEY": key, "EVENT_RETENTION": "720h"})).Common(":1"); c.EventRetention != 720*time.Hour {
		t.Errorf("EventRetention = %v", c.EventRetention)
	}
	if n := r.Int("N", 1, 1, 10); n != 7 {
		t.Errorf("Int = %d", n)
	}
	if !r.Bool("B", false) {
		t.Error("Bool = false")
	}
	if l := r.List("L"); !slices.Equal(l, []string{"a", "b"}) || r.List("UNSET") != nil {
		t.Errorf("List = %q, want [a b]", l)
	}
	if u := r.URL("U", "", "https"); u != "https://cb.example.com" {
		t.Errorf("URL = %q (trailing slash should be trimmed)", u)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
}
