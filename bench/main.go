package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// section is one benchmark question and the table that answers it.
type section struct {
	name  string
	about string
	needs []string // need* constants, checked before anything starts
	run   func(context.Context, *harness) (report, error)
}

// report is a section's result: printed for people and marshalled as is
// into the JSON file, so its exported fields are the machine-readable form.
type report interface {
	print(w io.Writer)
}

// sections run in this order. A new one is a run function in a file of its
// own, which asks the harness for the servers it needs, plus a line here.
var sections = []section{
	{
		name:  "proxy",
		about: "pgbench -S directly, through PgBouncer (session mode) and through pgrules",
		needs: []string{needPostgres, needPgbench, needPgbouncer, needPgrules},
		run:   runProxy,
	},
	{
		name:  "credit",
		about: "the check-credit order transaction through pgrules with rules.sql, with PL/pgSQL triggers (directly and through PgBouncer) and with no logic, in the three pgbench protocols; round trips per statement; one UPDATE of 1, 100, 10,000 lines",
		needs: []string{needPostgres, needPgbench, needPgbouncer, needPgrules},
		run:   runCredit,
	},
	{
		name:  "events",
		about: "the order transaction with an audit row event and an after-commit notify, through pgrules and as PL/pgSQL triggers; round trips the events add; outbox posts per second",
		needs: []string{needPostgres, needPgbench, needPgrules},
		run:   runEvents,
	},
	{
		name:  "rules",
		about: "compile time of 1,000 rules, evaluation of a formula and a constraint, catalog load of 500 tables",
		needs: []string{needPostgres},
		run:   runRules,
	},
	// Last, so that the sections before it run as they did without it.
	{
		name:  "orders",
		about: "the order transaction with little contention (1,000 customers) through pgrules, with triggers directly and through PgBouncer, with no logic; simple, extended, prepared; the proxy's CPU and writes to the server per transaction",
		needs: []string{needPostgres, needPgbench, needPgbouncer, needPgrules},
		run:   runOrders,
	},
}

type options struct {
	duration   time.Duration
	warmup     time.Duration
	repeat     int
	scale      int
	only       []string
	pgrulesEnv []string
	pgrulesBin string
	jsonPath   string
}

// envList collects repeated KEY=VALUE flags.
type envList []string

func (e *envList) String() string { return strings.Join(*e, " ") }

func (e *envList) Set(v string) error {
	for _, kv := range strings.Fields(v) {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("%q is not KEY=VALUE", kv)
		}
		*e = append(*e, kv)
	}
	return nil
}

func parseFlags(args []string, stderr io.Writer) (options, []section, error) {
	var o options
	var only string
	var env envList
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measured pgbench run (whole seconds)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "length of the warm-up run before each measured run (whole seconds; 0 for none)")
	fs.IntVar(&o.repeat, "repeat", 1, "runs per cell and target in the proxy, credit and orders sections; the median is reported")
	fs.IntVar(&o.scale, "scale", 10, "pgbench -i scale factor")
	fs.StringVar(&only, "only", "", "run only these sections (comma-separated)")
	fs.Var(&env, "pgrules-env", "KEY=VALUE added to pgrules' environment, e.g. GOMAXPROCS=1 or PGRULES_MAX_CONNECTIONS=50 (repeatable)")
	fs.StringVar(&o.pgrulesBin, "pgrules-bin", "", "use this pgrules binary instead of building ./cmd/pgrules")
	fs.StringVar(&o.jsonPath, "json", "", "also write all results, every run included, as JSON to this file")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run ./bench [flags]   (or: make bench)\n\nSections:\n")
		for _, s := range sections {
			fmt.Fprintf(stderr, "  %-10s %s\n", s.name, s.about)
		}
		fmt.Fprintf(stderr, "\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, nil, err
	}
	if fs.NArg() > 0 {
		return o, nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	o.pgrulesEnv = env
	// pgbench -T counts whole seconds.
	if o.duration < time.Second || o.duration%time.Second != 0 {
		return o, nil, fmt.Errorf("-duration %s: must be whole seconds, at least 1s", o.duration)
	}
	if o.warmup < 0 || o.warmup%time.Second != 0 {
		return o, nil, fmt.Errorf("-warmup %s: must be whole seconds, or 0", o.warmup)
	}
	if o.repeat < 1 {
		return o, nil, errors.New("-repeat must be at least 1")
	}
	if o.scale < 1 {
		return o, nil, errors.New("-scale must be at least 1")
	}
	if o.pgrulesBin != "" {
		if _, err := os.Stat(o.pgrulesBin); err != nil {
			return o, nil, fmt.Errorf("-pgrules-bin: %w", err)
		}
	}
	if only == "" {
		return o, sections, nil
	}
	var chosen []section
	for _, name := range strings.Split(only, ",") {
		name = strings.TrimSpace(name)
		s, ok := findSection(name)
		if !ok {
			var names []string
			for _, s := range sections {
				names = append(names, s.name)
			}
			return o, nil, fmt.Errorf("-only: no section %q (sections: %s)", name, strings.Join(names, ", "))
		}
		o.only = append(o.only, name)
		chosen = append(chosen, s)
	}
	return o, chosen, nil
}

func findSection(name string) (section, bool) {
	for _, s := range sections {
		if s.name == name {
			return s, true
		}
	}
	return section{}, false
}

func main() {
	os.Exit(benchMain(os.Args[1:], os.Stdout, os.Stderr))
}

// benchMain returns instead of exiting so that the harness's clean-up (its
// deferred stops and removals) always runs first.
func benchMain(args []string, stdout, stderr io.Writer) int {
	opts, chosen, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case s := <-sigs:
			fmt.Fprintf(stderr, "\nbench: %v: stopping and cleaning up (send it again to exit at once)\n", s)
			// A second signal then gets the default action, for when a
			// clean-up hangs; the children still get Pdeathsig.
			signal.Stop(sigs)
			cancel()
		case <-ctx.Done():
		}
	}()

	h, err := newHarness(opts, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	code := runSections(ctx, h, chosen, stdout, stderr)
	if err := h.close(); err != nil {
		fmt.Fprintf(stderr, "bench: cleaning up: %v\n", err)
		code = 1
	}
	if ctx.Err() != nil && code == 0 {
		code = 130
	}
	return code
}

// results is the JSON file's content.
type results struct {
	Started  time.Time         `json:"started"`
	Finished time.Time         `json:"finished"`
	Machine  machine           `json:"machine"`
	Versions map[string]string `json:"versions"`
	Options  jsonOptions       `json:"options"`
	Sections map[string]report `json:"sections"`
	Errors   map[string]string `json:"errors,omitempty"`
}

type jsonOptions struct {
	DurationS  int      `json:"duration_s"`
	WarmupS    int      `json:"warmup_s"`
	Repeat     int      `json:"repeat"`
	Scale      int      `json:"scale"`
	Only       []string `json:"only,omitempty"`
	PgrulesEnv []string `json:"pgrules_env,omitempty"`
	PgrulesBin string   `json:"pgrules_bin,omitempty"`
}

func runSections(ctx context.Context, h *harness, chosen []section, stdout, stderr io.Writer) int {
	o := h.opts
	res := results{
		Started:  time.Now().UTC(),
		Machine:  describeMachine(),
		Versions: h.versions,
		Options: jsonOptions{
			DurationS: seconds(o.duration), WarmupS: seconds(o.warmup), Repeat: o.repeat, Scale: o.scale,
			Only: o.only, PgrulesEnv: o.pgrulesEnv, PgrulesBin: o.pgrulesBin,
		},
		Sections: map[string]report{},
		Errors:   map[string]string{},
	}
	needs := map[string]bool{}
	for _, s := range chosen {
		for _, n := range s.needs {
			needs[n] = true
		}
	}
	if err := h.preflight(ctx, needs); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	printHeader(stdout, res)

	code := 0
	for _, s := range chosen {
		h.logf("section %s: %s", s.name, s.about)
		rep, err := s.run(ctx, h)
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "bench: section %s interrupted\n", s.name)
			code = 130
			break
		}
		if err != nil {
			fmt.Fprintf(stderr, "bench: section %s failed: %v\n", s.name, err)
			res.Errors[s.name] = err.Error()
			code = 1
			continue
		}
		res.Sections[s.name] = rep
		fmt.Fprintf(stdout, "\n== %s: %s\n\n", s.name, s.about)
		rep.print(stdout)
	}
	res.Finished = time.Now().UTC()
	res.Machine.LoadEnd = loadAverage()
	fmt.Fprintf(stdout, "\nload average at the end: %s; took %s\n", res.Machine.LoadEnd, res.Finished.Sub(res.Started).Round(time.Second))

	if o.jsonPath != "" && len(res.Sections)+len(res.Errors) > 0 {
		b, err := json.MarshalIndent(res, "", "  ")
		if err == nil {
			err = os.WriteFile(o.jsonPath, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "bench: writing %s: %v\n", o.jsonPath, err)
			return 1
		}
		h.logf("wrote %s", o.jsonPath)
	}
	return code
}

// machine describes where the numbers come from; the load average matters
// because a benchmark on a shared machine competes with whatever else runs.
type machine struct {
	Cores     int    `json:"cores"`
	CPU       string `json:"cpu,omitempty"`
	OS        string `json:"os"`
	Kernel    string `json:"kernel,omitempty"`
	LoadStart string `json:"load_average_start,omitempty"`
	LoadEnd   string `json:"load_average_end,omitempty"`
}

func describeMachine() machine {
	m := machine{Cores: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, LoadStart: loadAverage()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// loadAverage is the 1, 5 and 15 minute load average, where the system
// tells it.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func printHeader(w io.Writer, r results) {
	m := r.Machine
	fmt.Fprintf(w, "pgrules benchmarks, %s\n", r.Started.Format(time.RFC3339))
	fmt.Fprintf(w, "machine: %d cores", m.Cores)
	if m.CPU != "" {
		fmt.Fprintf(w, " (%s)", m.CPU)
	}
	fmt.Fprintf(w, ", %s %s, load average at the start: %s\n", m.OS, m.Kernel, m.LoadStart)
	for _, k := range []string{"go", "pgbench", "pgbouncer", "postgres", "pgrules"} {
		if v, ok := r.Versions[k]; ok {
			fmt.Fprintf(w, "%-10s %s\n", k+":", v)
		}
	}
}

func seconds(d time.Duration) int { return int(d / time.Second) }
