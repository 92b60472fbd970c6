// Command pgrules is the pgrules proxy and its administration commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const usage = `pgrules — a PostgreSQL wire-protocol proxy that runs declarative rules on writes.

Usage:
  pgrules serve [flags]   run the proxy in front of an upstream PostgreSQL
  pgrules demo  [flags]   start a throwaway PostgreSQL with the check-credit
                          scenario and the proxy in front of it
  pgrules install --upstream URL
                          install or upgrade the pgrules schema in a database
  pgrules explain --upstream URL <table>
                          show a table's rules in execution order
  pgrules verify --upstream URL [table]
                          list rows whose derived values drift from their rules
  pgrules rebuild --upstream URL [table]
                          set every derived value to its rule
  pgrules help            show this text

Run "pgrules <command> --help" for the flags of a command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(ctx, args)
	case "demo":
		err = runDemo(ctx, args)
	case "install":
		err = install(ctx, args, os.Stdout)
	case "explain":
		err = explain(ctx, args, os.Stdout)
	case "verify":
		err = maintain(ctx, args, os.Stdout, false)
	case "rebuild":
		err = maintain(ctx, args, os.Stdout, true)
	case "help", "-h", "--help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "pgrules: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "pgrules %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
