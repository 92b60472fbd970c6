package main

import (
	"io"
	"maps"
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

func TestParseStatCPU(t *testing.T) {
	// A command name with a space and a parenthesis, utime 150, stime 25.
	const stat = "4242 (pg rules) (x) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 25 0 0 20 0 12 0 100 0 0"
	if got, err := parseStatCPU(stat); err != nil || got != 175 {
		t.Errorf("parseStatCPU = %d, %v; want 175", got, err)
	}
	for _, bad := range []string{"4242 pgrules S 1", "4242 (pgrules) S 1 2 3", "4242 (pgrules) S 1 4242 4242 0 -1 4194560 900 0 0 0 x 25"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q) accepted", bad)
		}
	}
}

func TestCountCalls(t *testing.T) {
	// strace -f -yy: writes to the server (port 5432) on three
	// connections, one write interrupted by another thread; a write to the
	// client, to an eventfd, to another port, and a read from the server.
	const out = `101 write(14<TCP:[127.0.0.1:43254->127.0.0.1:5432]>, ""..., 69) = 69
102 write(5<TCP:[127.0.0.1:6432->127.0.0.1:50186]>, ""..., 417) = 417
101 writev(16<TCP:[127.0.0.1:43270->127.0.0.1:5432]>, [...], 2 <unfinished ...>
103 write(7<anon_inode:[eventfd]>, ""..., 8) = 8
101 <... writev resumed>) = 120
104 write(9<TCPv6:[[::1]:40000->[::1]:5432]>, ""..., 12) = 12
105 read(14<TCP:[127.0.0.1:43254->127.0.0.1:5432]>, ""..., 8192) = 20
106 write(3<TCP:[127.0.0.1:54320->127.0.0.1:15432]>, ""..., 5) = 5
101 write(14<TCP:[127.0.0.1:43254->127.0.0.1:5432]>, ""..., 12) = 12
101 write(14<TCP:[127.0.0.1:43254->127.0.0.1:5432]>, ""..., 13) = 13
`
	for _, c := range []struct{ least, want int }{{1, 5}, {2, 3}, {4, 0}} {
		n, err := countCalls(strings.NewReader(out), 5432, c.least)
		if err != nil || n.writes != c.want {
			t.Errorf("countCalls(least %d) writes = %d, %v; want %d", c.least, n.writes, err, c.want)
		}
	}
	// Every call counts once by name, an interrupted one at its start.
	n, _ := countCalls(strings.NewReader(out+"107 futex(0xc000, FUTEX_WAKE_PRIVATE, 1) = 1\nnanosleep({tv_sec=0, tv_nsec=20000}, NULL) = 0\n"), 5432, 1)
	want := map[string]int{"write": 7, "writev": 1, "read": 1, "futex": 1, "nanosleep": 1}
	if !maps.Equal(n.calls, want) {
		t.Errorf("countCalls calls = %v, want %v", n.calls, want)
	}
}

func TestPerTx(t *testing.T) {
	// 10 writes once (start-up), 7 per transaction.
	if got := perTx([2]int{10 + 7*50, 10 + 7*150}, [2]int{50, 150}); got != 7 {
		t.Errorf("perTx = %v, want 7", got)
	}
}

func TestOrdersGoals(t *testing.T) {
	ms := func(v float64) *float64 { return &v }
	cell := func(protocol string, clients int, rules, triggers, bouncer, none, unguarded float64) ordersCell {
		c := ordersCell{Protocol: protocol, Clients: clients, Results: map[string]*ordersResult{
			// Two runs of pgrules: the median of their CPU per transaction.
			ordersPgrules: {Runs: []ordersRun{
				{pgbenchRun: pgbenchRun{TPS: rules, Transactions: 1000}, ProxyCPUMS: ms(800)},
				{pgbenchRun: pgbenchRun{TPS: rules, Transactions: 2000}, ProxyCPUMS: ms(2000)},
			}},
			ordersTriggers:  {Runs: []ordersRun{{pgbenchRun: pgbenchRun{TPS: triggers}}}},
			ordersBouncer:   {Runs: []ordersRun{{pgbenchRun: pgbenchRun{TPS: bouncer, Transactions: 1000}, ProxyCPUMS: ms(200)}}},
			ordersNone:      {Runs: []ordersRun{{pgbenchRun: pgbenchRun{TPS: none}}}},
			ordersUnguarded: {Runs: []ordersRun{{pgbenchRun: pgbenchRun{TPS: unguarded, Transactions: 1000}, ProxyCPUMS: ms(700)}}},
		}}
		c.summarise()
		return c
	}
	r := &ordersReport{Cells: []ordersCell{
		// At 1 client pgrules passes the gate (0.95 of the triggers
		// through PgBouncer) but not the aim (0.5 of them directly).
		cell("simple", 1, 190, 380, 200, 400, 196),
		cell("simple", 8, 950, 1000, 900, 2000, 960),
	}}
	c := r.Cells[0]
	if c.RatioTriggers != 0.5 || c.RatioBouncer != 0.95 || c.RatioNone != 190.0/400 || c.RatioGuard != 190.0/196 {
		t.Errorf("ratios %+v", c)
	}
	if got := *c.Results[ordersPgrules].CPUMSPerTx; got != 0.9 {
		t.Errorf("pgrules CPU %v ms/tx, want the median of 0.8 and 1.0", got)
	}
	if got := *c.Results[ordersBouncer].CPUMSPerTx; got != 0.2 {
		t.Errorf("PgBouncer CPU %v ms/tx, want 0.2", got)
	}
	if c.Results[ordersTriggers].CPUMSPerTx != nil {
		t.Error("CPU reported for a target without a proxy")
	}
	g := r.goals()
	if len(g) != 4 || !g[0].Met || !g[1].Met || g[2].Met || !g[3].Met {
		t.Errorf("want the 8-client target, the gate and the guard's target met, the aim missed: %+v", g)
	}
	// The guard at 0.90 of pgrules without it misses its target of 0.95.
	r.Cells = append(r.Cells, cell("prepared", 8, 800, 1000, 900, 2000, 800/0.9))
	if g := r.goals(); g[0].Met || !strings.Contains(g[0].Detail, "prepared 0.80 (missed)") {
		t.Errorf("8-client target met with prepared at 0.8: %+v", g[0])
	}
	if g := r.goals(); g[3].Met || !strings.Contains(g[3].Detail, "prepared/8 0.90 (missed)") {
		t.Errorf("the guard's target met at 0.9: %+v", g[3])
	}
	r.ServerTimes = []serverTime{{Target: ordersPgrules, MSPerTx: 0.8}, {Target: ordersTriggers, MSPerTx: 0.6}, {Target: ordersUnguarded, MSPerTx: 0.76}}
	if cost, share, ok := r.guardServerCost(); !ok || math.Abs(cost-0.04) > 1e-9 || math.Abs(share-5) > 1e-9 {
		t.Errorf("guardServerCost = %v, %v, %v; want 0.04 ms, 5%%", cost, share, ok)
	}
	r.Goals = g
	r.WritesSkipped = "strace is not installed"
	var b strings.Builder
	r.print(&b)
	if !strings.Contains(b.String(), "not counted: strace is not installed") {
		t.Errorf("print left out why the writes were not counted:\n%s", b.String())
	}
}

func TestOrdersFlag(t *testing.T) {
	if _, s, err := parseFlags([]string{"-only", "orders"}, io.Discard); err != nil || len(s) != 1 || s[0].name != "orders" {
		t.Errorf("-only orders: %v %v", s, err)
	}
}
