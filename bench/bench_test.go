package main

import (
	"io"
	"math"
	"strings"
	"testing"
)

// The summary of pgbench 15; older versions print two tps lines, of which
// the one without connection time is the one that counts.
const pgbench15 = `pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 5 s
number of transactions actually processed: 250000
number of failed transactions: 0 (0.000%)
latency average = 0.160 ms
initial connection time = 12.345 ms
tps = 50000.123456 (without initial connection time)
`

const pgbench13 = `transaction type: <builtin: select only>
number of transactions actually processed: 1000
latency average = 1.000 ms
tps = 990.000000 (including connections establishing)
tps = 1000.000000 (excluding connections establishing)
`

func TestParsePgbench(t *testing.T) {
	r, err := parsePgbench(pgbench15, 8)
	if err != nil {
		t.Fatal(err)
	}
	if r.TPS != 50000.123456 || r.Transactions != 250000 || r.PgbenchLatencyMS != 0.160 {
		t.Errorf("got %+v", r)
	}
	if want := 8000 / 50000.123456; math.Abs(r.LatencyMS-want) > 1e-12 {
		t.Errorf("latency %v, want %v", r.LatencyMS, want)
	}
	r, err = parsePgbench(pgbench13, 1)
	if err != nil || r.TPS != 1000 {
		t.Errorf("pgbench 13: %+v, %v", r, err)
	}
}

func TestParsePgbenchRejectsFailures(t *testing.T) {
	failed := strings.Replace(pgbench15, "failed transactions: 0 (0.000%)", "failed transactions: 3 (0.001%)", 1)
	if _, err := parsePgbench(failed, 8); err == nil {
		t.Error("a run with failed transactions was accepted")
	}
	if _, err := parsePgbench("connection to server failed\n", 1); err == nil {
		t.Error("output without a summary was accepted")
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestGoals(t *testing.T) {
	cell := func(mode string, clients int, direct, bouncer, rules float64) proxyCell {
		c := proxyCell{Mode: mode, Clients: clients, Results: map[string]*targetResult{
			"direct":    {Runs: []pgbenchRun{{TPS: direct}}},
			"pgbouncer": {Runs: []pgbenchRun{{TPS: bouncer}}},
			"pgrules":   {Runs: []pgbenchRun{{TPS: rules}}},
		}}
		c.summarise()
		return c
	}
	// At 1 client 10000 TPS is 100 µs a query; 8000 is 125 µs, 25 µs more.
	r := &proxyReport{Cells: []proxyCell{
		cell("simple", 1, 10000, 7000, 8000),
		cell("simple", 8, 20000, 14000, 15000),
		cell("prepared", 1, 10000, 7000, 5000),
		cell("prepared", 8, 20000, 14000, 13000),
	}}
	if got := *r.Cells[0].AddedUSPgrules; math.Abs(got-25) > 1e-9 {
		t.Errorf("added latency %v µs, want 25", got)
	}
	if r.Cells[1].AddedUSPgrules != nil {
		t.Error("added latency reported at 8 clients")
	}
	g := r.goals()
	if g[0].Met || g[1].Met {
		t.Errorf("goals met despite prepared missing both: %+v", g)
	}
	r.Cells = r.Cells[:2]
	if g := r.goals(); !g[0].Met || !g[1].Met {
		t.Errorf("goals missed: %+v", g)
	}
	r.Goals = g
	r.print(io.Discard)
}

func TestFlags(t *testing.T) {
	o, s, err := parseFlags([]string{"-duration", "3s", "-only", "proxy", "-pgrules-env", "GOMAXPROCS=1 GOGC=200"}, io.Discard)
	if err != nil || len(s) != 1 || o.duration.Seconds() != 3 || len(o.pgrulesEnv) != 2 {
		t.Errorf("%+v %v %v", o, s, err)
	}
	for _, bad := range [][]string{{"-duration", "1500ms"}, {"-only", "nope"}, {"-pgrules-env", "GOMAXPROCS"}, {"-repeat", "0"}} {
		if _, _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
