package outbox

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPost measures deliveries per second: entries of 1000 keys,
// posted to a local server by one dispatcher with the default settings.
func BenchmarkPost(b *testing.B) {
	url, conn := newDB(b)
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got.Add(1)
	}))
	defer srv.Close()
	start(b, url, Settings{Destinations: loopbackOK})
	defineEv(b, conn)
	const n = 20000
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		want := got.Load() + n
		b.StartTimer()
		t0 := time.Now()
		exec(b, conn, `WITH e AS (INSERT INTO pgrules.outbox (rule, timing, key, kind, target, payload, rule_digest)
  SELECT 'ev', 'after_commit', 'public.t:' || (i % 1000), 'post', $1, '{"n": ' || i || '}', pgrules._rule_digest('ev', 'after_commit') FROM generate_series(1, $2) i)
SELECT pg_notify('pgrules_outbox', '')`, srv.URL, n)
		for got.Load() < want {
			time.Sleep(time.Millisecond)
		}
		elapsed += time.Since(t0)
	}
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "posts/s")
}
