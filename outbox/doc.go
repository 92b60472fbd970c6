// Package outbox delivers the entries of pgrules.outbox: the effects of
// after_commit and failure events (rules-api.md §4) that the engine
// records in the database and that must happen outside the transaction
// that caused them.
//
// A Dispatcher serves one database. It keeps a connection that LISTENs on
// channel pgrules_outbox, which writers notify in the transaction that
// inserts entries, and looks anyway every Poll, and when an entry's
// backoff ends. Each round claims a batch of due entries in one
// transaction with SELECT … FOR UPDATE SKIP LOCKED, delivers them while
// holding that transaction open, records the outcomes and commits. The
// open transaction is what lets several proxies share one outbox: an entry
// is never delivered by two dispatchers at once, and if a dispatcher dies
// mid-delivery its transaction rolls back and the entries are pending
// again. Delivery is therefore at least once: a receiver that must not act
// twice uses the Idempotency-Key header (post) or makes its statement
// idempotent (sql). Entries live in the database, so they survive a
// restart of the proxy and of PostgreSQL; the dispatcher reconnects.
//
// Kinds: post is an HTTP POST of the payload to the target URL with
// Content-Type application/json, Idempotency-Key "<database>-<id>" and
// Pgrules-Rule headers, successful on any 2xx status, sent only to the
// Destinations allowed (by default public addresses, checked at the address
// each connection is made to); notify is
// pg_notify(target, payload); sql runs the target query with the entry's
// args as text parameters. notify and sql run on a second connection
// (Config.ConnectRun), in a transaction of their own, as the entry's role
// (SET LOCAL ROLE), an sql entry inside pgrules._sandbox, or through
// Config.RunSQL, which lets the proxy run sql entries through its rules
// engine. The session's state is discarded after each entry. Every
// delivery is bounded by Settings.Timeout.
//
// An entry runs only while its rule has the digest the entry was recorded
// with (pgrules._rule_digest): one whose rule was dropped or changed is
// dead at once, having run nothing.
//
// Order: entries of one key (the table and primary key of the row the
// event fired on) are delivered one at a time in id order, which is the
// order their transactions committed in; keys are delivered in parallel.
// An entry waits while an earlier entry of its key is pending, whether it
// is waiting for its backoff or being delivered by another dispatcher.
// An entry that failed MaxAttempts times becomes dead, keeping its last
// error, and no longer holds back the later entries of its key, so that
// one bad entry cannot stop a key for good; pgrules.retry(id) makes a dead
// entry pending again, and it is then delivered after entries that came
// later.
//
// Failures back off exponentially: after the n-th failed attempt the
// entry waits Backoff·2ⁿ⁻¹, at most MaxBackoff, give or take 20% so that
// entries failing together do not retry together. A dispatcher stopped
// mid-delivery records what completed and leaves the interrupted entries
// pending with their attempts unchanged.
//
// Boundaries: pgrules._sandbox runs an sql entry inside a SECURITY DEFINER
// function of the entry's role, where PostgreSQL refuses any change of
// role, so the entry has that role's rights and no more; only the engine
// writes pgrules.outbox (SECURITY.md). ConnectRun's role must be a member
// of the roles it runs entries as, and should hold nothing else. The
// package knows nothing of rules or of the wire protocol, and imports
// neither.
package outbox
