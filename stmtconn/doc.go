// Package stmtconn implements stmt.Conn on a *pgconn.PgConn: the engine's
// view of a connection it holds itself rather than one it borrows from a
// client's session, such as the connection an outbox dispatcher runs an
// sql entry on, so that the rules of the tables it writes run too.
//
// It must be faithful: the engine runs client-like statements through it
// and relays what comes back, so statements go with the extended protocol
// exactly as stmt.Statement describes them (formats, types, named
// statements), Batch is one pipeline ending in a single Sync, and a server
// error comes back as a *pgerr.Error with every field of the
// ErrorResponse. Errors that are not the server's (a lost connection, a
// canceled context) carry SQLSTATE 08006.
//
// The package knows nothing of rules; it imports only stmt and pgerr.
package stmtconn
