package httpapi

// Page is a page of a list (SPEC §1) in fides's shape (fastapi-pagination's Page): the items,
// how many the whole list holds, the page number from 1, its size, and how many pages there are.
type Page[T any] struct {
	Items []T `json:"items"`
	Total int `json:"total"`
	Page  int `json:"page"`
	Size  int `json:"size"`
	Pages int `json:"pages"`
}

// NewPage returns page number page, of size size, holding items of a list of total; nil items
// are an empty list.
func NewPage[T any](items []T, total, page, size int) Page[T] {
	if items == nil {
		items = []T{}
	}
	pages := 0
	if size > 0 {
		pages = (total + size - 1) / size
	}
	return Page[T]{Items: items, Total: total, Page: page, Size: size, Pages: pages}
}
