package httpapi

import (
	"encoding/json"
	"testing"
)

func TestNewPage(t *testing.T) {
	for _, tt := range []struct {
		name                    string
		items                   []int
		total, page, size, want int
		json                    string
	}{
		{"empty list", nil, 0, 1, 50, 0, `{"items":[],"total":0,"page":1,"size":50,"pages":0}`},
		{"one short page", []int{1, 2}, 2, 1, 50, 1, `{"items":[1,2],"total":2,"page":1,"size":50,"pages":1}`},
		{"exactly two pages", []int{3, 4}, 4, 2, 2, 2, `{"items":[3,4],"total":4,"page":2,"size":2,"pages":2}`},
		{"a last partial page", []int{5}, 5, 3, 2, 3, `{"items":[5],"total":5,"page":3,"size":2,"pages":3}`},
		{"past the end", nil, 5, 9, 2, 3, `{"items":[],"total":5,"page":9,"size":2,"pages":3}`},
	} {
		p := NewPage(tt.items, tt.total, tt.page, tt.size)
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if p.Pages != tt.want || string(b) != tt.json {
			t.Errorf("%s: pages %d, %s; want %d, %s", tt.name, p.Pages, b, tt.want, tt.json)
		}
	}
}
