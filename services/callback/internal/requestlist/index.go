// Package requestlist is the projection behind the request list (GET /api/v1/privacy-request,
// SPEC §7): an in-memory index of every record of privacy_requests, one per callback replica,
// filled by a watch of the bucket (follow.go) and rebuilt from it at every start. It holds what the
// list filters, sorts and shows (ids, policy, status, step, times) and no personal data.
//
// The index keeps its rows as columns in the order of their creation (created_at, then key), so
// that the list's default order is a walk and a created_* range is two binary searches; the other
// orders select the page among the matching rows. Every write names the bucket revision it comes
// from, and an older one than the row's is ignored, so a watch that starts again (or delivers an
// entry twice) cannot move a row back in time.
package requestlist

import (
	"bytes"
	"cmp"
	"errors"
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/policyhooks/policyhooks/shared/event"
)

// ErrLoading reports a query before the index has read the whole bucket once.
var ErrLoading = errors.New("requestlist: the index is still loading")

// Row is one request as the list shows it.
type Row struct {
	// Key is the request's key in privacy_requests (event.KVKey of its id).
	Key                  string
	ID                   string
	ExternalID           string
	PolicyKey            string
	Status               event.Status
	Step                 event.Step
	CreatedAt            time.Time
	UpdatedAt            time.Time
	StartedProcessingAt  *time.Time
	FinishedProcessingAt *time.Time
}

// Field is an order of the list.
type Field int

// The orders of the list (SPEC §7 sort_field).
const (
	ByCreated Field = iota
	ByStarted
	ByFinished
	ByUpdated
)

// Range bounds a time: After and Before are exclusive, and a zero one is open.
type Range struct{ After, Before time.Time }

// Query is one page of the list: its filters (a zero one matches everything), its order and the
// page (from 1) of Size rows.
type Query struct {
	Statuses   []event.Status
	ID         string
	ExternalID string
	PolicyKey  string
	Created    Range
	Started    Range
	Finished   Range
	Sort       Field
	Ascending  bool
	Page, Size int
}

// Result is a page of the list and the number of rows every page together holds.
type Result struct {
	Rows  []Row
	Total int
}

// statuses are the statuses a row's status code names: 0 marks a removed row, and the last code
// a status this version does not know (a newer executor's), kept in Index.other.
var statuses = slices.Concat([]event.Status{""}, event.Statuses, []event.Status{""})

var otherStatus = uint8(len(statuses) - 1)

// statusCode returns the code of s.
func statusCode(s event.Status) uint8 {
	for i := 1; i < int(otherStatus); i++ {
		if statuses[i] == s {
			return uint8(i)
		}
	}
	return otherStatus
}

// Index is the projection. It is safe for concurrent use: one writer (the watch) and any number
// of queries.
//
// Its columns hold no pointers (the strings live in one byte arena, the steps and policies are
// interned), so that a million rows cost the garbage collector nothing to scan.
type Index struct {
	mu sync.RWMutex
	// The columns, one element per row, in creation order; a removed row keeps its place (status
	// 0) until compact.
	key, id, external []span
	externalHash      []uint32
	policy            []uint32
	status            []uint8
	step              []uint8
	created, updated  []int64
	started, finished []int64 // unix nanoseconds; 0: not yet
	rev               []uint64
	gen               []uint32

	// text holds the keys, ids and external ids the spans name.
	text []byte
	// at finds a key's row by its hash (keyHash); collide holds the keys whose hash another key
	// has.
	keyHash func(string) uint64
	at      map[uint64]int32
	collide map[string]int32

	other    map[string]event.Status // the statuses this version does not know, by key
	policies []string
	policyOf map[string]uint32
	steps    []event.Step
	stepOf   map[event.Step]uint8
	dead     int
	// bulk: rows are appended in arrival order while the first load runs, and sorted once at its
	// end (the watch delivers the bucket in the order of last writes, not of creation).
	bulk   bool
	loaded bool
	curGen uint32
}

// span is a string of Index.text.
type span struct{ at, n uint32 }

// New returns an empty index that answers ErrLoading until Loaded.
func New() *Index {
	seed := maphash.MakeSeed()
	return &Index{keyHash: func(k string) uint64 { return maphash.String(seed, k) }, at: map[uint64]int32{}, collide: map[string]int32{},
		other: map[string]event.Status{}, policyOf: map[string]uint32{}, stepOf: map[event.Step]uint8{},
		bulk: true, curGen: 1}
}

// Len returns the number of rows in the index.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.key) - x.dead
}

// Ready reports whether the index has read the bucket whole once and answers queries.
func (x *Index) Ready() bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.loaded
}

// str returns the bytes of s.
func (x *Index) str(s span) []byte { return x.text[s.at : s.at+s.n] }

// add puts v into the text and returns its span.
func (x *Index) add(v string) span {
	s := span{at: uint32(len(x.text)), n: uint32(len(v))}
	x.text = append(x.text, v...)
	return s
}

// find returns the row of key.
func (x *Index) find(key string) (int32, bool) {
	if i, ok := x.at[x.keyHash(key)]; ok && string(x.str(x.key[i])) == key {
		return i, true
	}
	i, ok := x.collide[key]
	return i, ok
}

// place records that key's row is i.
func (x *Index) place(key string, i int32) {
	h := x.keyHash(key)
	if j, ok := x.at[h]; ok && j != i && string(x.str(x.key[j])) != key {
		x.collide[key] = i
		return
	}
	x.at[h] = i
}

// forget forgets key, whose row was i.
func (x *Index) forget(key string, i int32) {
	h := x.keyHash(key)
	if j, ok := x.at[h]; ok && j == i {
		delete(x.at, h)
		return
	}
	delete(x.collide, key)
}

// Put records row r as of bucket revision rev; a revision not newer than the row's is ignored.
func (x *Index) Put(rev uint64, r Row) {
	x.mu.Lock()
	defer x.mu.Unlock()
	i, ok := x.find(r.Key)
	if ok && x.rev[i] >= rev {
		x.gen[i] = x.curGen
		return
	}
	created := r.CreatedAt.UnixNano()
	if ok && x.created[i] != created {
		x.removeAt(i) // created_at never changes; if it did, the row moves
		ok = false
	}
	if !ok {
		i = x.insert(r.Key, created)
		x.id[i] = x.key[i]
		if r.ID != r.Key {
			x.id[i] = x.add(r.ID)
		}
	}
	if string(x.str(x.external[i])) != r.ExternalID {
		x.external[i] = x.add(r.ExternalID)
		x.externalHash[i] = hash(r.ExternalID)
	}
	x.policy[i] = x.policyID(r.PolicyKey)
	x.status[i] = statusCode(r.Status)
	delete(x.other, r.Key)
	if x.status[i] == otherStatus {
		x.other[r.Key] = r.Status
	}
	x.step[i] = x.stepID(r.Step)
	x.updated[i] = r.UpdatedAt.UnixNano()
	x.started[i] = nanos(r.StartedProcessingAt)
	x.finished[i] = nanos(r.FinishedProcessingAt)
	x.rev[i] = rev
	x.gen[i] = x.curGen
}

// Remove removes the row of key as of bucket revision rev (a delete, a purge or an expiry). The
// watch delivers a key's revisions in order, so a removed key comes back only with a newer put.
func (x *Index) Remove(key string, rev uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if i, ok := x.find(key); ok && x.rev[i] < rev {
		x.removeAt(i)
		x.compactIfSparse()
	}
}

// Restart begins a new pass of the bucket (a watch that starts again): Loaded then removes the
// rows the pass did not deliver, which were removed while nobody watched.
func (x *Index) Restart() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.curGen++
}

// Loaded marks the end of a pass of the bucket: the first one makes the index answer queries.
func (x *Index) Loaded() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := range x.key {
		if x.status[i] != 0 && x.gen[i] != x.curGen {
			x.removeAt(int32(i))
		}
	}
	if x.bulk {
		x.sortRows()
		x.bulk = false
	}
	x.compactIfSparse()
	x.loaded = true
}

func nanos(t *time.Time) int64 {
	if t == nil {
		return 0
	}
	return t.UnixNano()
}

func (x *Index) policyID(key string) uint32 {
	id, ok := x.policyOf[key]
	if !ok {
		id = uint32(len(x.policies))
		x.policies = append(x.policies, key)
		x.policyOf[key] = id
	}
	return id
}

// stepID returns the code of step s; there are a few steps (and at most 256 are kept apart).
func (x *Index) stepID(s event.Step) uint8 {
	id, ok := x.stepOf[s]
	if !ok && len(x.steps) < 256 {
		id = uint8(len(x.steps))
		x.steps = append(x.steps, s)
		x.stepOf[s] = id
	}
	return id
}

// insert makes room for a row of key at its place in creation order (at the end while bulk) and
// returns it.
func (x *Index) insert(key string, created int64) int32 {
	n := len(x.key)
	i := n
	if !x.bulk {
		// Rows arrive in about creation order, so most inserts append.
		i = sort.Search(n, func(j int) bool {
			return x.created[j] > created || (x.created[j] == created && string(x.str(x.key[j])) > key)
		})
	}
	x.key = slices.Insert(x.key, i, x.add(key))
	x.id = slices.Insert(x.id, i, span{})
	x.external = slices.Insert(x.external, i, span{})
	x.externalHash = slices.Insert(x.externalHash, i, hash(""))
	x.policy = slices.Insert(x.policy, i, 0)
	x.status = slices.Insert(x.status, i, 0)
	x.step = slices.Insert(x.step, i, 0)
	x.created = slices.Insert(x.created, i, created)
	x.updated = slices.Insert(x.updated, i, 0)
	x.started = slices.Insert(x.started, i, 0)
	x.finished = slices.Insert(x.finished, i, 0)
	x.rev = slices.Insert(x.rev, i, 0)
	x.gen = slices.Insert(x.gen, i, 0)
	for j := i + 1; j <= n; j++ {
		if x.status[j] != 0 {
			x.place(string(x.str(x.key[j])), int32(j))
		}
	}
	x.place(key, int32(i))
	return int32(i)
}

// removeAt marks row i removed; compact reclaims its place and its text.
func (x *Index) removeAt(i int32) {
	key := string(x.str(x.key[i]))
	x.forget(key, i)
	delete(x.other, key)
	x.status[i] = 0
	x.dead++
}

// compactIfSparse drops the removed rows once they are a quarter of the index.
func (x *Index) compactIfSparse() {
	if x.dead < 1024 || x.dead*4 < len(x.key) {
		return
	}
	x.keep(func(i int) bool { return x.status[i] != 0 })
}

// sortRows puts the rows in creation order, dropping removed ones.
func (x *Index) sortRows() {
	order := make([]int32, 0, len(x.key))
	for i := range x.key {
		if x.status[i] != 0 {
			order = append(order, int32(i))
		}
	}
	slices.SortFunc(order, func(a, b int32) int {
		return cmp.Or(cmp.Compare(x.created[a], x.created[b]), bytes.Compare(x.str(x.key[a]), x.str(x.key[b])))
	})
	x.permute(order)
}

// keep keeps the rows for which ok holds, in their order.
func (x *Index) keep(ok func(int) bool) {
	order := make([]int32, 0, len(x.key)-x.dead)
	for i := range x.key {
		if ok(i) {
			order = append(order, int32(i))
		}
	}
	x.permute(order)
}

// permute rebuilds the columns as the rows order names, in that order, and the text with the
// strings of those rows only.
func (x *Index) permute(order []int32) {
	text := make([]byte, 0, len(x.text))
	move := func(col []span) []span {
		out := make([]span, len(order))
		for i, j := range order {
			s := col[j]
			out[i] = span{at: uint32(len(text)), n: s.n}
			text = append(text, x.str(s)...)
		}
		return out
	}
	key, external := move(x.key), move(x.external)
	id := make([]span, len(order))
	for i, j := range order {
		if x.id[j] == x.key[j] {
			id[i] = key[i]
			continue
		}
		id[i] = span{at: uint32(len(text)), n: x.id[j].n}
		text = append(text, x.str(x.id[j])...)
	}
	x.key, x.id, x.external, x.text = key, id, external, text
	x.externalHash = pick(x.externalHash, order)
	x.policy = pick(x.policy, order)
	x.status = pick(x.status, order)
	x.step = pick(x.step, order)
	x.created = pick(x.created, order)
	x.updated = pick(x.updated, order)
	x.started = pick(x.started, order)
	x.finished = pick(x.finished, order)
	x.rev = pick(x.rev, order)
	x.gen = pick(x.gen, order)
	x.dead = 0
	clear(x.at)
	clear(x.collide)
	for i := range x.key {
		x.place(string(x.str(x.key[i])), int32(i))
	}
}

func pick[T any](col []T, order []int32) []T {
	out := make([]T, len(order))
	for i, j := range order {
		out[i] = col[j]
	}
	return out
}

// Query returns the page q names: the rows that match every filter, in q's order, ties in
// creation order.
func (x *Index) Query(q Query) (Result, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if !x.loaded {
		return Result{}, ErrLoading
	}
	m, ok := x.matcher(q)
	if !ok {
		return Result{Rows: []Row{}}, nil
	}
	offset := (q.Page - 1) * q.Size
	var rows []int32
	var total int
	if q.Sort == ByCreated {
		rows, total = x.walk(&m, q.Ascending, offset, q.Size)
	} else {
		rows, total = x.selectPage(&m, q.Sort, q.Ascending, offset, q.Size)
	}
	res := Result{Rows: make([]Row, 0, len(rows)), Total: total}
	for _, i := range rows {
		res.Rows = append(res.Rows, x.row(i))
	}
	return res, nil
}

// matcher is a query compiled against the columns: the rows [lo, hi) may match.
type matcher struct {
	lo, hi    int
	statusOK  []bool // by status code; removed rows (0) never match
	policy    uint32
	anyPolicy bool
	// rest: a filter beyond status and policy is set (matchRest checks them).
	rest                   bool
	external               string
	externalHash           uint32
	startedLo, startedHi   int64
	finishedLo, finishedHi int64
	started, finished      bool
}

const (
	minNanos = -1 << 63
	maxNanos = 1<<63 - 1
)

// matcher compiles q; ok is false when nothing can match.
func (x *Index) matcher(q Query) (matcher, bool) {
	m := matcher{lo: 0, hi: len(x.key), anyPolicy: q.PolicyKey == "", statusOK: make([]bool, len(statuses))}
	for c := 1; c < len(statuses); c++ {
		m.statusOK[c] = len(q.Statuses) == 0
	}
	for _, s := range q.Statuses {
		m.statusOK[statusCode(s)] = true
	}
	if !m.anyPolicy {
		id, ok := x.policyOf[q.PolicyKey]
		if !ok {
			return m, false
		}
		m.policy = id
	}
	if q.ID != "" {
		i, ok := x.find(event.KVKey(q.ID))
		if !ok {
			return m, false
		}
		m.lo, m.hi = int(i), int(i)+1
	}
	lo, hi := bounds(q.Created)
	m.lo = max(m.lo, sort.Search(len(x.created), func(j int) bool { return x.created[j] > lo }))
	m.hi = min(m.hi, sort.Search(len(x.created), func(j int) bool { return x.created[j] >= hi }))
	if q.ExternalID != "" {
		m.external, m.externalHash = q.ExternalID, hash(q.ExternalID)
	}
	m.startedLo, m.startedHi = bounds(q.Started)
	m.started = !q.Started.After.IsZero() || !q.Started.Before.IsZero()
	m.finishedLo, m.finishedHi = bounds(q.Finished)
	m.finished = !q.Finished.After.IsZero() || !q.Finished.Before.IsZero()
	m.rest = m.external != "" || m.started || m.finished
	return m, m.lo < m.hi
}

// hash is 32-bit FNV-1a: the external id column keeps it, so that a row is compared by its
// string only when the hashes agree.
func hash(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}

// bounds returns r as exclusive unix nanoseconds.
func bounds(r Range) (lo, hi int64) {
	lo, hi = minNanos, maxNanos
	if !r.After.IsZero() {
		lo = r.After.UnixNano()
	}
	if !r.Before.IsZero() {
		hi = r.Before.UnixNano()
	}
	return lo, hi
}

// batch is how many matching rows scan hands over at a time.
const batch = 512

// scan calls take, in creation order (or its reverse), with the rows of [m.lo, m.hi) that match
// m, a batch at a time (so that the loop over the columns stays tight: the status and policy
// checks are most of the list's work).
func (x *Index) scan(m *matcher, ascending bool, take func([]int32)) {
	status, policy, extHash := x.status[:m.hi], x.policy[:m.hi], x.externalHash[:m.hi]
	ok, anyPolicy, want, rest := m.statusOK, m.anyPolicy, m.policy, m.rest
	byExternal, wantHash := m.external != "", m.externalHash
	var buf [batch]int32
	n := 0
	i, end, step := m.lo, m.hi, 1
	if !ascending {
		i, end, step = m.hi-1, m.lo-1, -1
	}
	for ; i != end; i += step {
		if !ok[status[i]] || (!anyPolicy && policy[i] != want) || (byExternal && extHash[i] != wantHash) ||
			(rest && !x.matchRest(m, i)) {
			continue
		}
		buf[n] = int32(i)
		if n++; n == batch {
			take(buf[:])
			n = 0
		}
	}
	if n > 0 {
		take(buf[:n])
	}
}

// matchRest checks the filters beyond status and policy.
func (x *Index) matchRest(m *matcher, i int) bool {
	if m.started {
		if t := x.started[i]; t == 0 || t <= m.startedLo || t >= m.startedHi {
			return false
		}
	}
	if m.finished {
		if t := x.finished[i]; t == 0 || t <= m.finishedLo || t >= m.finishedHi {
			return false
		}
	}
	return m.external == "" || (x.externalHash[i] == m.externalHash && string(x.str(x.external[i])) == m.external)
}

// walk returns the rows offset to offset+size of the matching ones in creation order, and how
// many match.
func (x *Index) walk(m *matcher, ascending bool, offset, size int) ([]int32, int) {
	rows := make([]int32, 0, size)
	total := 0
	x.scan(m, ascending, func(b []int32) {
		if skip := offset - total; skip < len(b) && len(rows) < size {
			page := b[max(skip, 0):]
			rows = append(rows, page[:min(len(page), size-len(rows))]...)
		}
		total += len(b)
	})
	return rows, total
}

// ranked is a row with its sort key: the time of the order's field, negated for a descending
// order and the largest for a row without it (last either way), then the row's place.
type ranked struct {
	key int64
	row int32
}

func (a ranked) less(b ranked) bool { return a.key < b.key || (a.key == b.key && a.row < b.row) }

// heapLimit is the largest offset+size selectPage keeps in a heap while it scans; a deeper page
// is selected among all the matching rows.
const heapLimit = 10000

// selectPage returns the page of the matching rows in the order of field, and how many match: the
// first offset+size are kept in a bounded heap as the rows are scanned (or, for a deeper page,
// selected among all of them), and only they are sorted.
func (x *Index) selectPage(m *matcher, f Field, ascending bool, offset, size int) ([]int32, int) {
	col := x.updated
	switch f {
	case ByStarted:
		col = x.started
	case ByFinished:
		col = x.finished
	}
	rank := func(i int32) ranked {
		t := col[i]
		switch {
		case t == 0:
			t = maxNanos
		case !ascending:
			t = -t
		}
		return ranked{key: t, row: i}
	}
	k := offset + size
	total := 0
	var first []ranked
	if k <= heapLimit {
		h := make(maxHeap, 0, k)
		// Times follow creation: scanning from the end that comes first in the order fills the
		// heap with rows that stay, and most of the others are refused by one comparison.
		x.scan(m, ascending, func(b []int32) {
			total += len(b)
			for _, i := range b {
				if r := rank(i); len(h) < k || r.less(h[0]) {
					h.offer(r, k)
				}
			}
		})
		first = h
	} else {
		x.scan(m, true, func(b []int32) {
			total += len(b)
			for _, i := range b {
				first = append(first, rank(i))
			}
		})
		// The page is the elements offset to k of the order: select the first k, then the
		// first offset of them, and sort the page alone.
		selectFirst(first, k)
		first = first[:min(k, len(first))]
		if offset >= len(first) {
			return []int32{}, total
		}
		selectFirst(first, offset)
		first = first[offset:]
		offset = 0
	}
	slices.SortFunc(first, func(a, b ranked) int {
		if a.less(b) {
			return -1
		}
		return 1
	})
	rows := []int32{}
	for i := offset; i < len(first); i++ {
		rows = append(rows, first[i].row)
	}
	return rows, total
}

// maxHeap holds the k least ranked rows seen, the greatest on top.
type maxHeap []ranked

// offer keeps r if it is among the k least.
func (h *maxHeap) offer(r ranked, k int) {
	s := *h
	if len(s) < k {
		s = append(s, r)
		for c := len(s) - 1; c > 0; {
			p := (c - 1) / 2
			if !s[p].less(s[c]) {
				break
			}
			s[p], s[c] = s[c], s[p]
			c = p
		}
		*h = s
		return
	}
	if !r.less(s[0]) {
		return
	}
	s[0] = r
	for p := 0; ; {
		c := 2*p + 1
		if c >= len(s) {
			break
		}
		if c+1 < len(s) && s[c].less(s[c+1]) {
			c++
		}
		if !s[p].less(s[c]) {
			break
		}
		s[p], s[c] = s[c], s[p]
		p = c
	}
}

// selectFirst reorders s so that its first k elements are the k least (in any order).
func selectFirst(s []ranked, k int) {
	lo, hi := 0, len(s)
	for hi-lo > 1 && k > lo && k < hi {
		// A random pivot (the rows come in about sorted order, or its reverse), then a
		// three-way partition.
		pivot := s[lo+rand.IntN(hi-lo)]
		lt, i, gt := lo, lo, hi
		for i < gt {
			switch {
			case s[i].less(pivot):
				s[lt], s[i] = s[i], s[lt]
				lt++
				i++
			case pivot.less(s[i]):
				gt--
				s[i], s[gt] = s[gt], s[i]
			default:
				i++
			}
		}
		switch {
		case k <= lt:
			hi = lt
		case k >= gt:
			lo = gt
		default:
			return
		}
	}
}

func (x *Index) row(i int32) Row {
	r := Row{
		Key: string(x.str(x.key[i])), ID: string(x.str(x.id[i])), ExternalID: string(x.str(x.external[i])),
		PolicyKey: x.policies[x.policy[i]], Step: x.steps[x.step[i]], CreatedAt: time.Unix(0, x.created[i]).UTC(), UpdatedAt: time.Unix(0, x.updated[i]).UTC(),
		StartedProcessingAt: timeOf(x.started[i]), FinishedProcessingAt: timeOf(x.finished[i]),
	}
	r.Status = statuses[x.status[i]]
	if x.status[i] == otherStatus {
		r.Status = x.other[r.Key]
	}
	return r
}

func timeOf(n int64) *time.Time {
	if n == 0 {
		return nil
	}
	t := time.Unix(0, n).UTC()
	return &t
}
