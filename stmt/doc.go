// Package stmt holds what passes between the proxy and the rules engine: a
// client's statement with its parameters, a statement's result, and Conn,
// through which the engine runs its own SQL on the client's upstream
// connection, inside the client's transaction.
//
// It is deliberately small and neutral: the proxy implements Conn on the
// wire without knowing rule semantics, and the engine uses it without
// knowing the wire. Neither imports the other.
package stmt
