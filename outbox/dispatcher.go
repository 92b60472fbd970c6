package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/rs/zerolog"
)

// Channel is the channel that writers of pgrules.outbox notify.
const Channel = "pgrules_outbox"

const (
	// Reconnecting starts soon, since a terminated connection usually
	// comes back at once, and slows down to this while PostgreSQL is
	// away (restarting, say).
	minRetry, maxRetry = 100 * time.Millisecond, 10 * time.Second
	// finishTimeout bounds recording a round's outcomes once the
	// dispatcher is stopping: what was delivered is better recorded, but
	// Close must not wait on a server that does not answer.
	finishTimeout = 10 * time.Second
)

// A Dispatcher delivers the outbox of one database. Its methods Start and
// Close are called once each, from one goroutine.
type Dispatcher struct {
	cfg    Config
	log    zerolog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	// conn claims the entries; the loop goroutine owns it, and database
	// is its current_database(), for the Idempotency-Key.
	conn     *pgx.Conn
	database string
	// missing is set while the outbox table does not exist, so that it is
	// logged once.
	missing bool
	// analyzed is when the loop last analysed the outbox; noAnalyze is
	// set once the dispatcher's role turned out not to be allowed to.
	analyzed  time.Time
	noAnalyze bool

	// side runs notify and sql entries, which the workers of a round take
	// turns at.
	sideMu sync.Mutex
	side   *pgx.Conn
}

// New returns a dispatcher for cfg, not yet started.
func New(cfg Config) *Dispatcher {
	cfg.Settings = cfg.Settings.withDefaults()
	return &Dispatcher{cfg: cfg, log: cfg.Logger, done: make(chan struct{})}
}

// Start runs the dispatcher until ctx ends or Close is called.
func (d *Dispatcher) Start(ctx context.Context) {
	ctx, d.cancel = context.WithCancel(ctx)
	go d.run(ctx)
}

// Close stops the dispatcher and waits for it: deliveries under way are
// interrupted, what completed is recorded, and the connections close.
func (d *Dispatcher) Close() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	<-d.done
}

func (d *Dispatcher) run(ctx context.Context) {
	defer close(d.done)
	defer d.disconnect()
	failures := 0
	for ctx.Err() == nil {
		err := d.step(ctx)
		switch {
		case err == nil:
			if failures > 0 {
				d.log.Info().Msg("outbox dispatcher reconnected")
			}
			failures = 0
		case ctx.Err() != nil:
		case isUndefinedTable(err):
			if !d.missing {
				d.missing = true
				d.log.Info().Msg("pgrules.outbox does not exist (the pgrules schema is not installed): waiting for it")
			}
			if err := d.wait(ctx, d.cfg.Poll); err != nil && ctx.Err() == nil {
				d.disconnect()
			}
		default:
			failures++
			delay := minRetry << min(failures-1, 10)
			delay = jitter(min(delay, maxRetry))
			d.log.Warn().Err(err).Dur("retry_in", delay).Msg("outbox dispatcher failed")
			d.disconnect()
			sleep(ctx, delay)
		}
	}
}

func isUndefinedTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == pgerr.UndefinedTable
}

// step connects if need be, runs a round, and when the round attempted
// nothing waits for a notification or until something is due.
func (d *Dispatcher) step(ctx context.Context) error {
	if d.conn == nil {
		if err := d.connect(ctx); err != nil {
			return err
		}
	}
	// Notifications that came during the last round are for entries this
	// round will see; dropping them keeps pgx's queue from growing while
	// the dispatcher is busy.
	d.drain()
	attempted, err := d.round(ctx)
	if err != nil {
		return err
	}
	if d.missing {
		d.missing = false
		d.log.Info().Msg("pgrules.outbox found")
	}
	if attempted > 0 {
		if attempted == d.cfg.Batch {
			d.analyze(ctx)
		}
		return nil // more may be due
	}
	wait, err := d.nextDue(ctx)
	if err != nil {
		return err
	}
	return d.wait(ctx, wait)
}

// analyzeEvery spaces the outbox's analyses during a backlog.
const analyzeEvery = 10 * time.Second

// analyze refreshes the outbox's statistics while a backlog lasts. The
// claim's plan depends on how many entries are pending, which the
// statistics, taken by autovacuum long after a burst of entries, put near
// none: planned on them, the claim probes every pending entry for each one
// it takes, and the outbox delivers a batch a second instead of thousands.
func (d *Dispatcher) analyze(ctx context.Context) {
	if d.noAnalyze || time.Since(d.analyzed) < analyzeEvery {
		return
	}
	d.analyzed = time.Now()
	if _, err := d.conn.Exec(ctx, "ANALYZE pgrules.outbox"); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == pgerr.InsufficientPrivilege {
			d.noAnalyze = true
		}
		d.log.Warn().Err(err).Msg("analysing pgrules.outbox during a backlog; the claims may be slow")
	}
}

func (d *Dispatcher) connect(ctx context.Context) error {
	conn, err := d.cfg.Connect(ctx)
	if err != nil {
		return err
	}
	// A round holds its transaction open while it delivers: a server
	// that ends idle transactions would roll the round back after the
	// deliveries and, the attempts unrecorded, have them repeated forever.
	// The claim is planned for each round: the outbox's statistics lag
	// far behind a burst of entries, and a generic plan made on them
	// scans every pending entry of every key.
	results, err := conn.PgConn().Exec(ctx, "SET idle_in_transaction_session_timeout = 0; SET plan_cache_mode = force_custom_plan; LISTEN "+Channel+"; SELECT current_database()").ReadAll()
	if err != nil {
		conn.Close(context.Background())
		return err
	}
	d.conn, d.database = conn, string(results[3].Rows[0][0])
	return nil
}

func (d *Dispatcher) disconnect() {
	if d.conn != nil {
		d.conn.Close(context.Background())
		d.conn = nil
	}
	d.sideMu.Lock()
	defer d.sideMu.Unlock()
	if d.side != nil {
		d.side.Close(context.Background())
		d.side = nil
	}
}

// drain drops the notifications received so far and reports whether there
// were any.
func (d *Dispatcher) drain() bool {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	found := false
	for {
		// With a done context pgx returns a queued notification, or an
		// error without touching the connection.
		if _, err := d.conn.WaitForNotification(done); err != nil {
			return found
		}
		found = true
	}
}

// wait returns when a notification comes, after timeout, or when ctx ends.
func (d *Dispatcher) wait(ctx context.Context, timeout time.Duration) error {
	if d.drain() {
		return nil // something was committed since the round looked
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := d.conn.WaitForNotification(wctx); err != nil {
		if wctx.Err() != nil && !d.conn.IsClosed() {
			return nil
		}
		return err
	}
	return nil
}

// nextDue returns how long until a pending entry's backoff ends, at most
// Poll. Entries that are due and pending but were not claimed are being
// delivered by another dispatcher, or wait for an entry that is: that
// dispatcher takes them next.
func (d *Dispatcher) nextDue(ctx context.Context) (time.Duration, error) {
	var secs *float64
	err := d.conn.QueryRow(ctx, `SELECT extract(epoch FROM min(next_at) - clock_timestamp())::float8
FROM pgrules.outbox WHERE state = 'pending' AND next_at > now()`).Scan(&secs)
	if err != nil {
		return 0, err
	}
	wait := d.cfg.Poll
	if secs != nil {
		wait = min(wait, max(time.Duration(*secs*float64(time.Second)), time.Millisecond))
	}
	return wait, nil
}

// claimSQL takes the due entries in id order, skipping those locked by
// another dispatcher, and those behind an earlier entry of their key that
// waits for its backoff (else a key with a long backlog in backoff would
// fill every batch with entries that cannot go). blocked marks the
// entries behind an earlier pending entry of their key that is not in the
// claim: one another dispatcher is delivering.
const claimSQL = `WITH c AS MATERIALIZED (
  SELECT o.id, o.rule, o.timing, o.key, o.kind, o.target, o.payload, o.args, o.role, o.attempts,
    coalesce(o.rule_digest = pgrules._rule_digest(o.rule, o.timing), false) AS pinned
  FROM pgrules.outbox o
  WHERE o.state = 'pending' AND o.next_at <= now()
    AND NOT EXISTS (SELECT FROM pgrules.outbox p
                    WHERE p.key = o.key AND p.id < o.id AND p.state = 'pending' AND p.next_at > now())
  ORDER BY o.id
  LIMIT $1
  FOR UPDATE SKIP LOCKED)
SELECT c.*, EXISTS (SELECT FROM pgrules.outbox p
                    WHERE p.key = c.key AND p.id < c.id AND p.state = 'pending'
                      AND p.id NOT IN (SELECT id FROM c)) AS blocked
FROM c
ORDER BY c.id`

// recordSQL records the outcomes of a round's attempts.
const recordSQL = `UPDATE pgrules.outbox o SET
  state = r.state,
  attempts = o.attempts + 1,
  delivered_at = CASE WHEN r.state = 'done' THEN statement_timestamp() ELSE o.delivered_at END,
  last_error = coalesce(r.error, o.last_error),
  next_at = CASE WHEN r.state = 'done' THEN o.next_at ELSE statement_timestamp() + make_interval(secs => r.delay) END
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::float8[]) AS r(id, state, error, delay)
WHERE o.id = r.id`

// round claims a batch, delivers it and records the outcomes, and returns
// how many entries it attempted.
func (d *Dispatcher) round(ctx context.Context) (int, error) {
	tx, err := d.conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
		defer cancel()
		tx.Rollback(rctx) // after Commit, a no-op
	}()
	entries, err := claim(ctx, tx, d.cfg.Batch)
	if err != nil || len(entries) == 0 {
		return 0, err
	}
	outcomes := d.deliverAll(ctx, entries)

	var (
		ids    []int64
		states []string
		errs   []*string
		delays []float64
	)
	for i, o := range outcomes {
		if !o.attempted {
			continue
		}
		e := &entries[i]
		ids = append(ids, e.ID)
		if o.err == nil {
			states, errs, delays = append(states, "done"), append(errs, nil), append(delays, 0)
			continue
		}
		msg := errorText(o.err)
		state := "pending"
		if e.Attempts+1 >= d.cfg.MaxAttempts || errors.As(o.err, new(errUnpinned)) {
			state = "dead"
			d.log.Warn().Int64("id", e.ID).Str("rule", e.Rule).Str("key", e.Key).Str("kind", e.Kind).
				Int("attempts", e.Attempts+1).Str("error", msg).Msg("outbox entry is dead")
		} else {
			d.log.Debug().Int64("id", e.ID).Str("rule", e.Rule).Int("attempts", e.Attempts+1).Str("error", msg).Msg("outbox delivery failed")
		}
		states, errs = append(states, state), append(errs, &msg)
		delays = append(delays, d.cfg.backoff(e.Attempts+1).Seconds())
	}
	if len(ids) == 0 {
		return 0, nil
	}
	// Once stopping, what was delivered is still recorded.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	if _, err := tx.Exec(fctx, recordSQL, ids, states, errs, delays); err != nil {
		return 0, err
	}
	if err := tx.Commit(fctx); err != nil {
		return 0, err
	}
	return len(ids), nil
}

// maxErrorText bounds last_error: the error of an sql entry may quote
// its query, a POST's the URL.
const maxErrorText = 2000

// errorText is err as last_error can hold it, whatever bytes a server put
// in it: an outcome the database refused to record would make the round
// fail after its deliveries, and repeat them forever.
func errorText(err error) string {
	s := err.Error()
	if len(s) > maxErrorText {
		s = s[:maxErrorText]
	}
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
}

// claim returns the entries of a batch that may go now, in id order.
func claim(ctx context.Context, tx pgx.Tx, batch int) ([]Entry, error) {
	rows, err := tx.Query(ctx, claimSQL, batch)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var entries []Entry
	for rows.Next() {
		var (
			e       Entry
			blocked bool
		)
		if err := rows.Scan(&e.ID, &e.Rule, &e.Timing, &e.Key, &e.Kind, &e.Target, &e.Payload, &e.Args, &e.Role, &e.Attempts, &e.Pinned, &blocked); err != nil {
			return nil, err
		}
		if !blocked {
			entries = append(entries, e)
		}
	}
	return entries, rows.Err()
}

// outcome is what became of a claimed entry in a round.
type outcome struct {
	// attempted is unset for an entry not tried: behind a failure of its
	// key, or interrupted by Close.
	attempted bool
	err       error
}

// errUnpinned is the error of an entry whose rule was dropped or changed
// since it was recorded: what it would run no longer comes from a rule,
// so it is dead at once.
type errUnpinned struct{ rule string }

func (e errUnpinned) Error() string {
	return fmt.Sprintf("not run: rule %q was dropped or changed since the entry was recorded (SELECT pgrules.retry(id) runs it with the rule as it is now)", e.rule)
}

// deliverAll delivers entries, the keys in parallel and the entries of a
// key in order, stopping a key at its first failure.
func (d *Dispatcher) deliverAll(ctx context.Context, entries []Entry) []outcome {
	outcomes := make([]outcome, len(entries))
	var keys [][]int // indexes into entries, per key, in id order
	byKey := make(map[string]int)
	for i := range entries {
		k, ok := byKey[entries[i].Key]
		if !ok {
			k = len(keys)
			byKey[entries[i].Key] = k
			keys = append(keys, nil)
		}
		keys[k] = append(keys[k], i)
	}
	work := make(chan []int)
	var wg sync.WaitGroup
	for range min(d.cfg.Workers, len(keys)) {
		wg.Go(func() {
			for key := range work {
				for _, i := range key {
					var err error = errUnpinned{entries[i].Rule}
					if entries[i].Pinned {
						err = d.deliver(ctx, &entries[i])
					}
					if err != nil && ctx.Err() != nil {
						break // interrupted, not failed
					}
					outcomes[i] = outcome{attempted: true, err: err}
					if err != nil {
						break
					}
				}
			}
		})
	}
	for _, key := range keys {
		work <- key
	}
	close(work)
	wg.Wait()
	return outcomes
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
