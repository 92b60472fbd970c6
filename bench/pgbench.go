package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pgrules/pgrules/internal/tempdb"
)

// pgbenchRun is one measured pgbench run.
type pgbenchRun struct {
	TPS float64 `json:"tps"`
	// LatencyMS is clients/TPS (see doc.go for why not pgbench's figure).
	LatencyMS        float64 `json:"latency_ms"`
	PgbenchLatencyMS float64 `json:"pgbench_latency_ms"`
	Transactions     int64   `json:"transactions"`
	Failed           int64   `json:"failed"`
}

var (
	reTPS     = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \((?:without|excluding) (?:initial )?connection`)
	reLatency = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
	reXacts   = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	reFailed  = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
)

// parsePgbench reads the summary pgbench prints at the end of a run. A run
// with failed transactions or none at all is an error: its TPS would be a
// number, but not one that measures what the section claims.
func parsePgbench(out string, clients int) (pgbenchRun, error) {
	var r pgbenchRun
	m := reTPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no tps line in pgbench's output:\n%s", tail(out, 2000))
	}
	r.TPS, _ = strconv.ParseFloat(m[1], 64)
	if m := reLatency.FindStringSubmatch(out); m != nil {
		r.PgbenchLatencyMS, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reXacts.FindStringSubmatch(out); m != nil {
		r.Transactions, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reFailed.FindStringSubmatch(out); m != nil {
		r.Failed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if r.Failed > 0 || r.Transactions == 0 || r.TPS <= 0 {
		return r, fmt.Errorf("pgbench: %d transactions, %d failed:\n%s", r.Transactions, r.Failed, tail(out, 2000))
	}
	r.LatencyMS = 1000 * float64(clients) / r.TPS
	return r, nil
}

// pgbench runs the pgbench of the throwaway cluster with args and returns
// its output. PG* variables of the caller's environment are left out: a
// PGOPTIONS or PGSSLMODE meant for something else would change what is
// measured, and differently for each target.
func (h *harness) pgbench(ctx context.Context, args ...string) (string, error) {
	pg, err := h.postgres(ctx)
	if err != nil {
		return "", err
	}
	cmd := command(ctx, nil, pg.Bin("pgbench"), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return run(ctx, cmd)
}

// pgbenchSelect runs pgbench's built-in select-only script for duration
// against url.
func (h *harness) pgbenchSelect(ctx context.Context, url, mode string, clients, threads int, duration time.Duration) (pgbenchRun, error) {
	out, err := h.pgbench(ctx, "-n", "-S",
		"-T", strconv.Itoa(int(duration/time.Second)),
		"-M", mode,
		"-c", strconv.Itoa(clients),
		"-j", strconv.Itoa(threads),
		url)
	if err != nil {
		return pgbenchRun{}, err
	}
	return parsePgbench(out, clients)
}

// pgbenchData creates (once) a database initialised by pgbench -i at the
// configured scale, shared by every section that runs pgbench's scripts.
func (h *harness) pgbenchData(ctx context.Context) (string, error) {
	if h.pgbenchDB != "" {
		return h.pgbenchDB, nil
	}
	pg, err := h.postgres(ctx)
	if err != nil {
		return "", err
	}
	const db = "pgbench"
	// Dropped first in case an earlier section's attempt failed half-way.
	for _, sql := range []string{"DROP DATABASE IF EXISTS " + db, "CREATE DATABASE " + db} {
		if _, err := execSQL(ctx, pg.URL(tempdb.SuperUser, "postgres"), sql); err != nil {
			return "", err
		}
	}
	h.logf("pgbench -i -s %d", h.opts.scale)
	start := time.Now()
	if _, err := h.pgbench(ctx, "-i", "-q", "-s", strconv.Itoa(h.opts.scale), url(pg.Port, db)); err != nil {
		return "", err
	}
	h.logf("pgbench -i took %s", time.Since(start).Round(100*time.Millisecond))
	h.pgbenchDB = db
	return db, nil
}
