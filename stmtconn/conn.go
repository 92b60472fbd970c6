package stmtconn

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/stmt"
)

type conn struct {
	pg        *pgconn.PgConn
	notice    func(string)
	ends      uint64
	exchanges uint64
}

// New returns c as a stmt.Conn. Notice passes its messages to notice; nil
// drops them. Notices the server sends go to c's own OnNotice handler.
func New(c *pgconn.PgConn, notice func(string)) stmt.Conn {
	return &conn{pg: c, notice: notice}
}

// settled records the end of a call: the server's ReadyForQuery said the
// session is idle, so whatever transaction the call ran in has ended, be
// it explicit or the implicit one of an autocommit statement.
func (c *conn) settled() {
	c.exchanges++ // every call is one round trip
	if c.TxStatus() == stmt.TxIdle {
		c.ends++
	}
}

// Exec implements stmt.Conn.
func (c *conn) Exec(ctx context.Context, st stmt.Statement) (*stmt.Result, error) {
	results, err := c.Batch(ctx, []stmt.Statement{st})
	if len(results) > 0 {
		return results[0], err
	}
	return nil, err
}

// Batch implements stmt.Conn.
func (c *conn) Batch(ctx context.Context, sts []stmt.Statement) ([]*stmt.Result, error) {
	if len(sts) == 0 {
		return nil, nil
	}
	defer c.settled()
	p := c.pg.StartPipeline(ctx)
	for i := range sts {
		st := &sts[i]
		switch {
		case st.Name != "" && st.SQL != "":
			p.SendPrepare(st.Name, st.SQL, st.ParamOIDs)
			p.SendQueryPrepared(st.Name, st.Params, st.ParamFormats, st.ResultFormats)
		case st.Name != "":
			p.SendQueryPrepared(st.Name, st.Params, st.ParamFormats, st.ResultFormats)
		default:
			p.SendQueryParams(st.SQL, st.Params, st.ParamOIDs, st.ParamFormats, st.ResultFormats)
		}
	}
	if err := p.Sync(); err != nil {
		p.Close()
		return nil, c.convert(err)
	}
	var (
		results  []*stmt.Result
		firstErr error
	)
loop:
	for {
		r, err := p.GetResults()
		switch r := r.(type) {
		case nil:
			if err == nil {
				break loop
			}
			if firstErr == nil {
				firstErr = err
			}
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				break loop // the connection is gone
			}
			// The server skips to the Sync, and so does GetResults.
		case *pgconn.ResultReader:
			res, err := read(r)
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			results = append(results, res)
		case *pgconn.PipelineSync:
			break loop
		}
		// A *pgconn.StatementDescription answers the Describe of a
		// statement prepared under a name; its execution follows.
	}
	if err := p.Close(); err != nil && firstErr == nil {
		firstErr = err
	}
	return results, c.convert(firstErr)
}

// read copies a result out of r: pgconn reuses its buffers.
func read(r *pgconn.ResultReader) (*stmt.Result, error) {
	res := &stmt.Result{}
	if fds := r.FieldDescriptions(); fds != nil {
		res.Fields = make([]stmt.Field, len(fds))
		for i, f := range fds {
			res.Fields[i] = stmt.Field{Name: f.Name, TableOID: f.TableOID, TableAttrNum: f.TableAttributeNumber,
				TypeOID: f.DataTypeOID, TypeSize: f.DataTypeSize, TypeModifier: f.TypeModifier, Format: f.Format}
		}
	}
	for r.NextRow() {
		values := r.Values()
		row := make([][]byte, len(values))
		for i, v := range values {
			if v != nil {
				row[i] = append(make([]byte, 0, len(v)), v...)
			}
		}
		res.Rows = append(res.Rows, row)
	}
	tag, err := r.Close()
	if err != nil {
		return nil, err
	}
	res.Tag = tag.String()
	return res, nil
}

// ParamTypes implements stmt.Conn.
func (c *conn) ParamTypes(ctx context.Context, sql string, oids []uint32) ([]uint32, error) {
	defer c.settled()
	sd, err := c.pg.Prepare(ctx, "", sql, oids)
	if err != nil {
		return nil, c.convert(err)
	}
	return sd.ParamOIDs, nil
}

// Query implements stmt.Conn.
func (c *conn) Query(ctx context.Context, sql string, args ...string) ([][][]byte, error) {
	res, err := c.Exec(ctx, stmt.Statement{SQL: sql, Params: stmt.TextParams(args)})
	if err != nil {
		return nil, err
	}
	return res.Rows, nil
}

// Simple implements stmt.Conn.
func (c *conn) Simple(ctx context.Context, sql string) ([]*stmt.Result, error) {
	defer c.settled()
	mrr := c.pg.Exec(ctx, sql)
	var (
		results []*stmt.Result
		readErr error
	)
	for mrr.NextResult() {
		res, err := read(mrr.ResultReader())
		if err != nil {
			readErr = err
			break
		}
		results = append(results, res)
	}
	err := mrr.Close()
	if err == nil {
		err = readErr
	}
	return results, c.convert(err)
}

// TxStatus implements stmt.Conn.
func (c *conn) TxStatus() stmt.TxStatus { return stmt.TxStatus(c.pg.TxStatus()) }

// TxEnds implements stmt.Conn.
func (c *conn) TxEnds() uint64 { return c.ends }

// Exchanges implements stmt.Conn: no client's message is relayed here.
func (c *conn) Exchanges() (now, began uint64) { return c.exchanges, c.exchanges }

// Parameter implements stmt.Conn.
func (c *conn) Parameter(name string) string { return c.pg.ParameterStatus(name) }

// Notice implements stmt.Conn.
func (c *conn) Notice(message string) {
	if c.notice != nil {
		c.notice(message)
	}
}

// convert returns err as the *pgerr.Error stmt.Conn promises.
func (c *conn) convert(err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return fromPgError(pe)
	}
	if c.pg.IsClosed() {
		return pgerr.Fatal(pgerr.ConnectionFailure, "lost the connection to the server: %w", err)
	}
	return pgerr.New(pgerr.ConnectionFailure, "%w", err)
}

func fromPgError(pe *pgconn.PgError) *pgerr.Error {
	severity := pe.SeverityUnlocalized
	if severity == "" {
		severity = pe.Severity // servers before 9.6 send only the localized one
	}
	return &pgerr.Error{
		Code: pe.Code, Severity: severity, Message: pe.Message, Detail: pe.Detail, Hint: pe.Hint,
		Schema: pe.SchemaName, Table: pe.TableName, Column: pe.ColumnName, Constraint: pe.ConstraintName,
		Position: pe.Position, InternalPosition: pe.InternalPosition, InternalQuery: pe.InternalQuery,
		Where: pe.Where, DataType: pe.DataTypeName, File: pe.File, Line: pe.Line, Routine: pe.Routine,
	}
}
