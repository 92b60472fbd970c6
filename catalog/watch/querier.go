package watch

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/pgrules/pgrules/catalog"
)

// PgxQuerier adapts a pgx connection to catalog.Querier, for the watcher
// and for the commands that load a catalog once.
func PgxQuerier(conn *pgx.Conn) catalog.Querier { return pgxQuerier{conn} }

type pgxQuerier struct{ conn *pgx.Conn }

func (q pgxQuerier) Query(ctx context.Context, sql string, args ...string) ([][][]byte, error) {
	params := make([][]byte, len(args))
	for i, a := range args {
		params[i] = []byte(a)
	}
	res := q.conn.PgConn().ExecParams(ctx, sql, params, nil, nil, nil).Read()
	return res.Rows, res.Err
}
