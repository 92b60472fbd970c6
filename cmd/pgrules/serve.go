package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgrules/pgrules/outbox"
	"github.com/pgrules/pgrules/proxy"
	"github.com/pgrules/pgrules/rules"
	"github.com/pgrules/pgrules/stmtconn"
	"github.com/rs/zerolog"
)

// serveFlags are the flags of `serve`, shared by `demo`. Every flag can also
// be set by an environment variable PGRULES_<NAME> (upper case, '-' as '_').
type serveFlags struct {
	listen          string
	upstream        string
	upstreamSSLMode string
	tlsCert         string
	tlsKey          string
	maxMessageBytes int
	maxConnections  int
	maxStartup      int
	shutdownTimeout time.Duration
	cpuProfile      string
	logLevel        string
	logFormat       string
	logStatements   bool
	outbox          outboxFlags
}

// outboxFlags say how the proxy delivers the outbox of after_commit and
// failure events.
type outboxFlags struct {
	deliver    bool
	runAs      string
	timeout    time.Duration
	attempts   int
	backoff    time.Duration
	maxBackoff time.Duration
	workers    int
	// allow are the --outbox-allow patterns (outbox.Destinations).
	allow patternList
}

// patternList is a comma-separated flag value; setting it again replaces
// it, as with every other flag.
type patternList []string

func (p *patternList) String() string { return strings.Join(*p, ",") }

func (p *patternList) Set(v string) error {
	*p = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*p = append(*p, s)
		}
	}
	_, err := outbox.ParseDestinations(*p)
	return err
}

func (f *serveFlags) register(fs *flag.FlagSet, withUpstream bool) {
	fs.StringVar(&f.listen, "listen", "127.0.0.1:6432", "address to accept clients on")
	if withUpstream {
		fs.StringVar(&f.upstream, "upstream", "", "URL of the upstream PostgreSQL, e.g. postgres://pgrules@127.0.0.1:5432/postgres (its host, port and TLS settings; clients choose their own database and user)")
	}
	fs.StringVar(&f.upstreamSSLMode, "upstream-sslmode", "", "sslmode for upstream connections (disable, allow, prefer, require, verify-ca, verify-full); overrides the URL's")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate offered to clients that ask for TLS (with --tls-key)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.IntVar(&f.maxMessageBytes, "max-message-bytes", 64<<20, "largest client message accepted; a larger one ends the session with SQLSTATE 54000")
	fs.IntVar(&f.maxConnections, "max-connections", 1000, "most concurrent client sessions; one more is refused with SQLSTATE 53300")
	fs.IntVar(&f.maxStartup, "max-startup-connections", 256, "most connections at once that have not finished authenticating (from accept until login); one more is refused with SQLSTATE 53300")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM/SIGINT, how long open transactions may run before their sessions are closed")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "console", "json or console")
	fs.BoolVar(&f.logStatements, "log-statements", false, "put the text of a client's statement in the log lines about it (an engine failure); off, statements and their parameter values, which may hold personal data, stay out of the logs")
	fs.BoolVar(&f.outbox.deliver, "outbox", true, "deliver the outbox of after_commit and failure events (pgrules.outbox) of every database served; false leaves it to other proxies")
	fs.StringVar(&f.outbox.runAs, "outbox-upstream", "", "URL whose user the outbox dispatcher runs sql and notify entries as (their roles): a NOINHERIT login role with no rights of its own, granted the roles that write tables with events (see SECURITY.md); default --upstream's")
	fs.DurationVar(&f.outbox.timeout, "outbox-timeout", 10*time.Second, "time limit of one delivery: an HTTP POST, or the transaction of a notify or sql entry")
	fs.IntVar(&f.outbox.attempts, "outbox-attempts", 10, "failed attempts after which an outbox entry is dead (SELECT pgrules.retry(id) re-queues it)")
	fs.DurationVar(&f.outbox.backoff, "outbox-backoff", time.Second, "wait after an entry's first failed attempt, doubled after each further one (with jitter)")
	fs.DurationVar(&f.outbox.maxBackoff, "outbox-max-backoff", 10*time.Minute, "longest wait between two attempts of an entry")
	fs.IntVar(&f.outbox.workers, "outbox-workers", 32, "keys whose entries are delivered at once, per database")
	fs.Var(&f.outbox.allow, "outbox-allow", "comma-separated destinations that post() may reach besides public addresses (loopback, private, link-local and other non-public addresses are refused): host names (hooks.internal), *.domain, addresses and CIDR prefixes (10.0.0.0/8), a name or address optionally with :port")
}

// parseFlags parses args over defaults taken from the environment.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var envErr error
	fs.VisitAll(func(fl *flag.Flag) {
		name := "PGRULES_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if err := fl.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
			fl.DefValue = v
		}
	})
	if envErr != nil {
		return envErr
	}
	return fs.Parse(args)
}

func newFlagSet(name, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: pgrules %s [flags]\n\n%s\n\nFlags (each also read from PGRULES_<FLAG>, e.g. PGRULES_LISTEN):\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}

func (f *serveFlags) logger() (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(f.logLevel)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("--log-level: %w", err)
	}
	var log zerolog.Logger
	switch f.logFormat {
	case "json":
		log = zerolog.New(os.Stderr)
	case "console":
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly})
	default:
		return zerolog.Logger{}, fmt.Errorf("--log-format must be json or console, not %q", f.logFormat)
	}
	return log.Level(level).With().Timestamp().Logger(), nil
}

func (f *serveFlags) proxyConfig(log zerolog.Logger) (proxy.Config, error) {
	cfg := proxy.Config{
		Upstream:              f.upstream,
		UpstreamSSLMode:       f.upstreamSSLMode,
		MaxMessageBytes:       f.maxMessageBytes,
		MaxConnections:        f.maxConnections,
		MaxStartupConnections: f.maxStartup,
		Logger:                log,
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return cfg, errors.New("--tls-cert and --tls-key go together")
	}
	if f.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return cfg, fmt.Errorf("TLS certificate: %w", err)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return cfg, nil
}

func serve(ctx context.Context, args []string) error {
	var f serveFlags
	fs := newFlagSet("serve", "Runs the proxy in front of the upstream PostgreSQL until SIGINT or SIGTERM.")
	f.register(fs, true)
	fs.StringVar(&f.cpuProfile, "cpu-profile", "", "write a CPU profile (go tool pprof) of the whole run to this file, for finding where the time goes")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.upstream == "" {
		return errors.New("--upstream (or PGRULES_UPSTREAM) is required")
	}
	log, err := f.logger()
	if err != nil {
		return err
	}
	cfg, err := f.proxyConfig(log)
	if err != nil {
		return err
	}
	if f.cpuProfile != "" {
		out, err := os.Create(f.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer out.Close()
		if err := pprof.StartCPUProfile(out); err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	return runProxy(ctx, cfg, &f, f.shutdownTimeout, nil)
}

// runProxy serves on f.listen until ctx ends, then shuts down gracefully
// within timeout. ready, if set, runs once the listener is open.
func runProxy(ctx context.Context, cfg proxy.Config, f *serveFlags, timeout time.Duration, ready func(net.Addr)) error {
	ob, listen := f.outbox, f.listen
	var deliverer *outbox.Manager
	engine := rules.NewEngine(rules.EngineConfig{
		Connect: catalogConnector(cfg.Upstream, cfg.UpstreamSSLMode, rules.CatalogApplicationName),
		Setup:   installSchema,
		Serving: func(database string) {
			if deliverer != nil {
				deliverer.Ensure(database)
			}
		},
		LogStatements: f.logStatements,
		Logger:        cfg.Logger,
	})
	defer engine.Close()
	if ob.deliver {
		runAs := cfg.Upstream
		if ob.runAs != "" {
			runAs = ob.runAs
		}
		destinations, err := outbox.ParseDestinations(ob.allow)
		if err != nil {
			return fmt.Errorf("--outbox-allow: %w", err)
		}
		deliverer = outbox.NewManager(outbox.ManagerConfig{
			Connect:    catalogConnector(cfg.Upstream, cfg.UpstreamSSLMode, outboxApplicationName),
			ConnectRun: catalogConnector(runAs, cfg.UpstreamSSLMode, outboxApplicationName),
			// Writes and sql() of after_commit events run with their
			// tables' rules, like a client's.
			RunSQL: func(ctx context.Context, database string, conn *pgconn.PgConn, e outbox.Entry) error {
				return engine.RunTx(ctx, database, stmtconn.New(conn, nil), e.Role, e.Target, e.Args)
			},
			Settings: outbox.Settings{
				Timeout: ob.timeout, MaxAttempts: ob.attempts, Backoff: ob.backoff, MaxBackoff: ob.maxBackoff,
				Workers: ob.workers, Destinations: destinations, Logger: cfg.Logger,
			},
		})
		defer deliverer.Close()
		// Entries recorded before a restart are delivered without waiting
		// for a client of their database.
		go func() {
			if err := deliverer.Discover(ctx, upstreamDatabase(cfg.Upstream)); err != nil {
				cfg.Logger.Warn().Err(err).Msg("looking for databases with an outbox")
			}
		}()
	}
	cfg.Rules = engine
	srv, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	cfg.Logger.Info().Str("listen", ln.Addr().String()).Msg("pgrules is accepting connections")
	if ready != nil {
		ready(ln.Addr())
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	cfg.Logger.Info().Dur("timeout", timeout).Int("sessions", srv.ActiveSessions()).Msg("shutting down: waiting for open transactions")
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		cfg.Logger.Warn().Err(err).Msg("shutdown timeout: closed the remaining sessions")
	}
	if err := <-served; !errors.Is(err, proxy.ErrServerClosed) {
		return err
	}
	cfg.Logger.Info().Msg("pgrules stopped")
	return nil
}

func portOf(addr net.Addr) string {
	return strconv.Itoa(addr.(*net.TCPAddr).Port)
}

// outboxApplicationName tells the outbox's connections from the clients'
// in pg_stat_activity.
const outboxApplicationName = "pgrules outbox"

// upstreamDatabase is the database the upstream URL names.
func upstreamDatabase(upstream string) string {
	cfg, err := pgx.ParseConfig(upstream)
	if err != nil {
		return ""
	}
	return cfg.Database
}
