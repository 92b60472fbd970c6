// Package proxy is pgrules' PostgreSQL wire-protocol front end.
//
// It owns the sockets: the listener, TLS on the client side, the startup and
// authentication relay, one session per client with its own upstream
// connection, cancel requests, connection and message-size limits (held
// to PostgreSQL's own before authentication), and graceful shutdown. It
// keeps each session's transaction state from the status byte of
// ReadyForQuery.
//
// Traffic is relayed as raw protocol frames: a message is read into the
// session's buffered reader, looked at only as far as its type byte (and the
// body of the few messages whose meaning the proxy needs, such as
// ReadyForQuery), and written out unchanged. Nothing on the relay path parses
// SQL or allocates per message.
//
// Each session runs two goroutines. The frontend loop owns the client reader
// and the upstream writer; the backend loop owns the upstream reader and the
// client writer. Before the loops start and after both have stopped, the
// session's own goroutine owns all four. A statement the rules engine runs
// borrows the upstream reader and the client writer from the backend loop
// (lend.go) and runs under the session's context, which ends with the
// session or when the server closes its connections.
//
// The files follow the same split: startup.go relays startup and
// authentication, frontend.go and backend.go are the two loops, and
// session.go holds what both share. In a session with rules, intercept.go
// runs the simple Queries the engine wants part of, batch.go holds an
// extended-protocol batch back until its Sync, held.go runs it,
// implicit.go keeps the transactions PostgreSQL would run either in, and
// portal.go answers the portals the engine executes.
//
// The proxy knows nothing of rule semantics and never imports expr: deciding
// what a rule means is the rules package's job.
package proxy
