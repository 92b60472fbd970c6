// Package pgerr is the one error type of pgrules: an error that carries a
// PostgreSQL SQLSTATE and the fields of an ErrorResponse.
//
// Every package that fails in a way a client must see (the proxy, the
// catalog, the rules engine) returns a *pgerr.Error, possibly wrapped with %w;
// the proxy reads it back with errors.As and turns it into an ErrorResponse.
// Code never decides anything by matching error text.
//
// The package knows nothing of the wire protocol: converting to a protocol
// message is the proxy's job.
package pgerr
