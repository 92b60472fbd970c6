package rules

import (
	"strconv"
	"testing"
	"unsafe"
)

// TestPlanCache: the cache stays bounded, keeps the texts just used, and
// keeps caching new texts once full.
func TestPlanCache(t *testing.T) {
	var pc textCache[*plan]
	hot := &plan{}
	pc.store("hot", hot)
	for i := range 3 * maxPlans {
		pc.store(strconv.Itoa(i), &plan{})
		if i%1000 == 0 {
			if p, ok := pc.load("hot"); !ok || p != hot {
				t.Fatalf("after %d texts, the text in use is gone", i)
			}
		}
	}
	last := strconv.Itoa(3*maxPlans - 1)
	if _, ok := pc.load(last); !ok {
		t.Fatalf("the newest text is not cached")
	}
	if _, ok := pc.load("0"); ok {
		t.Fatalf("the oldest text is still cached")
	}
	// A text in the older generation moves to the newer one as a copy:
	// what load is given is only lent, as the proxy's buffer is.
	buf := []byte(strconv.Itoa(2*maxPlans + 5))
	if _, ok := pc.load(unsafe.String(unsafe.SliceData(buf), len(buf))); !ok {
		t.Fatalf("a text of the older generation is not cached")
	}
	copy(buf, "x")
	if _, ok := pc.cur.Load().m.Load(strconv.Itoa(2*maxPlans + 5)); !ok {
		t.Fatalf("the text moved to the newer generation was not copied")
	}
	var n int64
	for _, g := range []*cacheGen{pc.cur.Load(), pc.old.Load()} {
		if g != nil {
			n += g.n.Load()
		}
	}
	if n > 2*maxPlans {
		t.Fatalf("%d plans cached, more than two generations of %d", n, maxPlans)
	}
}
