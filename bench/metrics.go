package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// natsRequestsMetric is the executor's counter of the NATS request/replies it makes (KV get,
// create, update, JetStream publish with ack; not message acks), one series per operation.
const natsRequestsMetric = "executor_nats_requests_total"

// scrapeCounter fetches a Prometheus text exposition from url and returns the sum of all series of
// the counter name. ok is false when the page has no such series or there is no page (404).
func scrapeCounter(ctx context.Context, client *http.Client, url, name string) (sum float64, ok bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, false, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		_, _ = io.Copy(io.Discard, resp.Body)
		return 0, false, nil
	case resp.StatusCode != http.StatusOK:
		_, _ = io.Copy(io.Discard, resp.Body)
		return 0, false, fmt.Errorf("scrape %s: status %s", url, resp.Status)
	}
	sum, ok, err = sumCounter(resp.Body, name)
	if err != nil {
		return 0, false, fmt.Errorf("scrape %s: %w", url, err)
	}
	return sum, ok, nil
}

// sumCounter reads a Prometheus text exposition and sums the values of the series of metric name,
// whatever their labels. ok is false when there is none.
func sumCounter(r io.Reader, name string) (sum float64, ok bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, found := strings.CutPrefix(line, name)
		if !found || line == "" || line[0] == '#' {
			continue
		}
		switch {
		case strings.HasPrefix(rest, "{"):
			end := labelsEnd(rest)
			if end < 0 {
				return 0, false, fmt.Errorf("unterminated labels in %q", line)
			}
			rest = rest[end+1:]
		case strings.HasPrefix(rest, " "), strings.HasPrefix(rest, "\t"):
		default:
			continue // another metric whose name starts with name
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, false, fmt.Errorf("no value in %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("value in %q: %w", line, err)
		}
		sum += v
		ok = true
	}
	return sum, ok, sc.Err()
}

// labelsEnd returns the index of the '}' closing the label set s starts with, skipping quoted
// label values (which may hold '}' and escaped quotes), or -1.
func labelsEnd(s string) int {
	quoted := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '}':
			return i
		}
	}
	return -1
}
