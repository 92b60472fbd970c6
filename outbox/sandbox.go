package outbox

import "github.com/jackc/pgx/v5/pgtype"

// sandboxSQL runs an sql entry's statement with its text parameters with
// exactly the rights of current_user (pgrules._sandbox in
// sql/functions.sql): nothing it runs can change the role.
const sandboxSQL = "SELECT pgrules._sandbox($1, $2::text[])"

// sandboxParams are sandboxSQL's parameters for query and args.
func sandboxParams(query string, args []*string) ([]*string, error) {
	arr, err := pgtype.NewMap().Encode(pgtype.TextArrayOID, pgtype.TextFormatCode, args, nil)
	if err != nil || arr == nil {
		return []*string{&query, nil}, err
	}
	s := string(arr)
	return []*string{&query, &s}, nil
}

// resetSQL puts the session back as it was before an entry: its settings,
// session authorization and role, temporary objects (pgrules._reset_temp),
// LISTENs, cursors, prepared statements and session advisory locks. What
// it changes is the session's own, not the database's, so it does not wait
// for its commit to reach the disk. (DISCARD ALL does the same but cannot
// leave the temporary schema as it is, and making the sandbox's function
// again for every entry cost a quarter of the entries' rate.)
const resetSQL = `BEGIN; SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL; SET LOCAL synchronous_commit = off;
SELECT pgrules._reset_temp(); UNLISTEN *; CLOSE ALL; DEALLOCATE ALL; SELECT pg_advisory_unlock_all(); COMMIT`
