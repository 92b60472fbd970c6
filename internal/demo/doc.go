// Package demo holds the check-credit scenario (customers, orders, line
// items, products), copied from the project's acceptance scenarios, and
// loads it into a database for `pgrules demo`, the tests and the benchmarks.
package demo
