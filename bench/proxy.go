package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// The targets for the proxy section.
const (
	maxAddedLatencyUS = 40.0 // per query, at 1 client, versus direct
	targetClients     = 8    // where pgrules must keep up with PgBouncer
)

var (
	proxyModes   = []string{"simple", "extended", "prepared"}
	proxyClients = []int{1, targetClients}
	// The fixed order of the targets in tables and JSON; the order they run
	// in rotates (see runProxy).
	proxyTargets = []string{"direct", "pgbouncer", "pgrules"}
)

type proxyReport struct {
	Scale     int         `json:"scale"`
	DurationS int         `json:"duration_s"`
	WarmupS   int         `json:"warmup_s"`
	Repeat    int         `json:"repeat"`
	Cells     []proxyCell `json:"cells"`
	Goals     []goal      `json:"goals"`
}

type proxyCell struct {
	Mode    string                   `json:"mode"`
	Clients int                      `json:"clients"`
	Threads int                      `json:"threads"`
	Results map[string]*targetResult `json:"results"` // by proxyTargets

	RatioPgrulesDirect    float64 `json:"ratio_pgrules_direct"`
	RatioPgrulesPgbouncer float64 `json:"ratio_pgrules_pgbouncer"`
	RatioPgbouncerDirect  float64 `json:"ratio_pgbouncer_direct"`
	// Latency added versus direct, only at 1 client: with more clients than
	// cores the latency is mostly waiting for a core, not the proxy's work.
	AddedUSPgrules   *float64 `json:"added_us_pgrules,omitempty"`
	AddedUSPgbouncer *float64 `json:"added_us_pgbouncer,omitempty"`
}

type targetResult struct {
	TPS       float64      `json:"tps"`        // median of the runs
	LatencyMS float64      `json:"latency_ms"` // clients / TPS
	Runs      []pgbenchRun `json:"runs"`
}

// goal is one of the targets and whether this run met it.
type goal struct {
	Name   string `json:"name"`
	Met    bool   `json:"met"`
	Detail string `json:"detail"`
}

func runProxy(ctx context.Context, h *harness) (report, error) {
	db, err := h.pgbenchData(ctx)
	if err != nil {
		return nil, err
	}
	pg, err := h.postgres(ctx)
	if err != nil {
		return nil, err
	}
	bouncer, err := h.pgbouncer(ctx)
	if err != nil {
		return nil, err
	}
	rules, err := h.pgrules(ctx)
	if err != nil {
		return nil, err
	}
	urls := map[string]string{
		"direct":    url(pg.Port, db),
		"pgbouncer": url(bouncer, db),
		"pgrules":   url(rules, db),
	}
	rep := &proxyReport{
		Scale:     h.opts.scale,
		DurationS: seconds(h.opts.duration),
		WarmupS:   seconds(h.opts.warmup),
		Repeat:    h.opts.repeat,
	}
	turn := 0
	for _, mode := range proxyModes {
		for _, clients := range proxyClients {
			cell := proxyCell{Mode: mode, Clients: clients, Threads: min(clients, 2), Results: map[string]*targetResult{}}
			for _, t := range proxyTargets {
				cell.Results[t] = &targetResult{}
			}
			for rep := 1; rep <= h.opts.repeat; rep++ {
				// Rotating who goes first keeps a steady drift (a
				// neighbour's job starting, the CPU warming up) from always
				// landing on the same target.
				for i := range proxyTargets {
					t := proxyTargets[(i+turn)%len(proxyTargets)]
					if h.opts.warmup > 0 {
						if _, err := h.pgbenchSelect(ctx, urls[t], mode, clients, cell.Threads, h.opts.warmup); err != nil {
							return nil, fmt.Errorf("%s, %s, %d clients, warm-up: %w", t, mode, clients, err)
						}
					}
					r, err := h.pgbenchSelect(ctx, urls[t], mode, clients, cell.Threads, h.opts.duration)
					if err != nil {
						return nil, fmt.Errorf("%s, %s, %d clients: %w", t, mode, clients, err)
					}
					cell.Results[t].Runs = append(cell.Results[t].Runs, r)
					h.logf("proxy %-8s %d clients run %d/%d  %-9s %9.0f tps %8.3f ms", mode, clients, rep, h.opts.repeat, t, r.TPS, r.LatencyMS)
				}
				turn++
			}
			cell.summarise()
			rep.Cells = append(rep.Cells, cell)
		}
	}
	rep.Goals = rep.goals()
	return rep, nil
}

func (c *proxyCell) summarise() {
	for _, r := range c.Results {
		tps := make([]float64, len(r.Runs))
		for i, run := range r.Runs {
			tps[i] = run.TPS
		}
		r.TPS = median(tps)
		r.LatencyMS = 1000 * float64(c.Clients) / r.TPS
	}
	d, b, p := c.Results["direct"], c.Results["pgbouncer"], c.Results["pgrules"]
	c.RatioPgrulesDirect = p.TPS / d.TPS
	c.RatioPgrulesPgbouncer = p.TPS / b.TPS
	c.RatioPgbouncerDirect = b.TPS / d.TPS
	if c.Clients == 1 {
		pa := 1000 * (p.LatencyMS - d.LatencyMS)
		ba := 1000 * (b.LatencyMS - d.LatencyMS)
		c.AddedUSPgrules, c.AddedUSPgbouncer = &pa, &ba
	}
}

// medianRun is the run of median TPS (the lower middle one of an even
// number).
func medianRun(runs []pgbenchRun) pgbenchRun {
	if len(runs) == 0 {
		return pgbenchRun{}
	}
	s := append([]pgbenchRun(nil), runs...)
	sort.Slice(s, func(i, j int) bool { return s[i].TPS < s[j].TPS })
	return s[(len(s)-1)/2]
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func (r *proxyReport) goals() []goal {
	tput := goal{Name: fmt.Sprintf("pgrules TPS >= PgBouncer TPS at %d clients, every mode", targetClients), Met: true}
	lat := goal{Name: fmt.Sprintf("pgrules adds <= %.0f µs per query at 1 client, every mode", maxAddedLatencyUS), Met: true}
	var tputParts, latParts []string
	for _, c := range r.Cells {
		switch {
		case c.Clients == targetClients:
			ok := c.RatioPgrulesPgbouncer >= 1
			tput.Met = tput.Met && ok
			tputParts = append(tputParts, fmt.Sprintf("%s %.2f%s", c.Mode, c.RatioPgrulesPgbouncer, mark(ok)))
		case c.Clients == 1 && c.AddedUSPgrules != nil:
			ok := *c.AddedUSPgrules <= maxAddedLatencyUS
			lat.Met = lat.Met && ok
			latParts = append(latParts, fmt.Sprintf("%s %.1f µs%s", c.Mode, *c.AddedUSPgrules, mark(ok)))
		}
	}
	tput.Detail = "pgrules/pgbouncer: " + strings.Join(tputParts, ", ")
	lat.Detail = "added: " + strings.Join(latParts, ", ")
	return []goal{tput, lat}
}

func mark(ok bool) string {
	if ok {
		return ""
	}
	return " (missed)"
}

func (r *proxyReport) print(w io.Writer) {
	fmt.Fprintf(w, "pgbench -S (select only), scale %d; %ds per run after a %ds warm-up, targets interleaved; ", r.Scale, r.DurationS, r.WarmupS)
	if r.Repeat > 1 {
		fmt.Fprintf(w, "median of %d runs\n", r.Repeat)
	} else {
		fmt.Fprintf(w, "1 run per cell\n")
	}
	fmt.Fprintf(w, "latency = clients/TPS in ms; +µs = latency added versus direct at 1 client; %d clients use -j 2\n\n", targetClients)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	// AlignRight suits the numbers; padding the mode keeps it left-aligned.
	fmt.Fprintln(tw, "mode    \tclients\tdirect TPS\tms\tpgbouncer TPS\tms\tpgrules TPS\tms\tbouncer/direct\tpgrules/direct\tpgrules/bouncer\t+µs bouncer\t+µs pgrules\t")
	for _, c := range r.Cells {
		fmt.Fprintf(tw, "%-8s\t%d\t", c.Mode, c.Clients)
		for _, t := range proxyTargets {
			res := c.Results[t]
			fmt.Fprintf(tw, "%.0f\t%.3f\t", res.TPS, res.LatencyMS)
		}
		fmt.Fprintf(tw, "%.2f\t%.2f\t%.2f\t%s\t%s\t\n", c.RatioPgbouncerDirect, c.RatioPgrulesDirect, c.RatioPgrulesPgbouncer,
			optUS(c.AddedUSPgbouncer), optUS(c.AddedUSPgrules))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, g := range r.Goals {
		verdict := "MET"
		if !g.Met {
			verdict = "NOT MET"
		}
		fmt.Fprintf(w, "target: %s: %s (%s)\n", g.Name, verdict, g.Detail)
	}
}

func optUS(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f", *v)
}
