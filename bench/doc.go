// Command bench is the program behind `make bench`: it measures pgrules
// against the alternatives a user would weigh it against, in one run on one
// machine, and prints ratios as well as absolute numbers, because absolute
// numbers from a shared or virtual machine mean little on their own.
//
// Usage:
//
//	go run ./bench [-duration 10s] [-warmup 1s] [-repeat 1] [-scale 10]
//	               [-only proxy] [-pgrules-env GOMAXPROCS=2 ...]
//	               [-pgrules-bin path] [-json out.json]
//
// The program is made of sections (see sections in main.go); each measures
// one question and prints its own table. A section asks the harness for
// what it needs — a throwaway PostgreSQL, PgBouncer, the pgrules proxy — and
// the harness starts each only once, on first use, and stops all of them at
// the end, also on error, SIGINT or SIGTERM. Adding a section means writing a
// function that returns a report and adding it to the list.
//
// pgrules is built into a temporary directory and run as a separate
// process, like the sidecar it is in production: measuring it in-process
// would let the benchmark's own goroutines and garbage compete with the
// proxy's inside one runtime, and would hide the cost of its process.
//
// Section "proxy" answers the question of how much the proxy costs
// on the read path: pgbench -S (one primary-key SELECT per transaction) in
// the three query modes (simple, extended, prepared) with 1 and 8 clients,
// directly, through PgBouncer in session mode and through pgrules. For each
// cell the three targets run back to back, each after a short warm-up run,
// and the order rotates from cell to cell, so that drift in the machine's
// load affects all three alike rather than favouring whichever came first.
// With -repeat N every cell runs N times and the median TPS is reported.
// Average latency is clients/TPS: what pgbench prints as "latency average",
// but without its rounding to a microsecond and without the connection set-up
// it includes, so that the latency added by a proxy (at 1 client, versus
// direct) is not lost in rounding. pgbench's own figure is in the JSON.
// Section "credit" runs its three targets the same way (rotated, -repeat
// times, the run of median TPS reported), without warm-up runs.
// Section "orders" runs the order transaction with little contention (one
// of 1,000 customers per order) like the proxy section runs pgbench -S: in
// the three query modes at 1 and 8 clients, through pgrules, with the
// triggers directly and through PgBouncer, and directly with no logic,
// rotated, each run after a warm-up, medians of -repeat runs. It reads the
// CPU time of pgrules' and PgBouncer's processes (/proc/<pid>/stat) around
// each measured run, and, where strace is installed, counts pgrules' writes
// to PostgreSQL's sockets per transaction at 1 client, in runs of their own
// since strace slows the traced process.
//
// Progress goes to stderr, the report to stdout, and with -json a
// machine-readable copy of all results (every run, not only medians) to a
// file.
package main
