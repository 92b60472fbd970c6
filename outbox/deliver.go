package outbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// deliver makes one attempt at e.
func (d *Dispatcher) deliver(ctx context.Context, e *Entry) error {
	switch e.Kind {
	case "post":
		ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
		defer cancel()
		return d.post(ctx, e)
	case "notify":
		return d.onSide(ctx, func(ctx context.Context, side *pgconn.PgConn) error {
			return execAs(ctx, side, e.Role, "SELECT pg_notify($1, $2)", []*string{&e.Target, e.Payload})
		})
	case "sql":
		return d.onSide(ctx, func(ctx context.Context, side *pgconn.PgConn) error {
			if d.cfg.RunSQL != nil {
				return d.cfg.RunSQL(ctx, side, *e)
			}
			params, err := sandboxParams(e.Target, e.Args)
			if err != nil {
				return err
			}
			return execAs(ctx, side, e.Role, sandboxSQL, params)
		})
	}
	return fmt.Errorf("unknown kind %q", e.Kind)
}

func (d *Dispatcher) post(ctx context.Context, e *Entry) error {
	var body io.Reader = http.NoBody
	if e.Payload != nil {
		body = strings.NewReader(*e.Payload)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.Target, body)
	if err != nil {
		return fmt.Errorf("POST %s: %w", e.Target, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", d.database+"-"+strconv.FormatInt(e.ID, 10))
	req.Header.Set("Pgrules-Rule", e.Rule)
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("POST %s: no response within %s", e.Target, d.cfg.Timeout)
		}
		var refused *RefusedError
		if errors.As(err, &refused) {
			return fmt.Errorf("POST %s: %w", e.Target, refused)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text repeats the method and URL
		}
		return fmt.Errorf("POST %s: %w", e.Target, err)
	}
	// Reading the body to its end lets the transport reuse the connection.
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("POST %s: %s", e.Target, resp.Status)
	}
	if err != nil {
		return fmt.Errorf("POST %s: reading the response: %w", e.Target, err)
	}
	return nil
}

// onSide runs f on the second connection, opening it if need be, within
// Timeout. The workers of a round take turns at it, and the turn does not
// count against the timeout.
func (d *Dispatcher) onSide(ctx context.Context, f func(context.Context, *pgconn.PgConn) error) error {
	d.sideMu.Lock()
	defer d.sideMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	if d.side != nil && d.side.IsClosed() {
		d.side = nil
	}
	if d.side == nil {
		connect := d.cfg.ConnectRun
		if connect == nil {
			connect = d.cfg.Connect
		}
		side, err := connect(ctx)
		if err != nil {
			return err
		}
		d.side = side
	}
	pg := d.side.PgConn()
	err := f(ctx, pg)
	// The next entry must not run in what this one left open, nor in the
	// session state it left (resetSQL). The next entry may be another
	// role's.
	if !pg.IsClosed() && pg.TxStatus() != 'I' {
		if _, rerr := pg.Exec(ctx, "ROLLBACK").ReadAll(); rerr != nil {
			pg.Close(ctx)
		}
		if err == nil {
			err = errors.New("the transaction was left open; rolled back")
		}
	}
	if !pg.IsClosed() {
		if _, derr := pg.Exec(ctx, resetSQL).ReadAll(); derr != nil {
			pg.Close(ctx)
		}
	}
	return err
}

// execAs runs query with args as role, in a transaction of its own, in one
// round trip. After an error the transaction is left failed, for onSide
// to roll back.
func execAs(ctx context.Context, conn *pgconn.PgConn, role, query string, args []*string) error {
	params := make([][]byte, len(args))
	for i, a := range args {
		if a != nil {
			params[i] = []byte(*a)
		}
	}
	b := &pgconn.Batch{}
	b.ExecParams("BEGIN", nil, nil, nil, nil)
	b.ExecParams("SET LOCAL ROLE "+pgx.Identifier{role}.Sanitize(), nil, nil, nil, nil)
	b.ExecParams(query, params, nil, nil, nil)
	b.ExecParams("COMMIT", nil, nil, nil, nil)
	_, err := conn.ExecBatch(ctx, b).ReadAll()
	return err
}
