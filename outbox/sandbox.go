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
