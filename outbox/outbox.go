package outbox

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
)

// Entry is one row of pgrules.outbox, as claimed for delivery.
type Entry struct {
	ID     int64
	Rule   string // the event that recorded it
	Timing string // after_commit or failure
	Key    string // "schema.table:pk": entries of one key go in id order
	Kind   string // notify, sql or post
	// Target is the channel (notify), the query (sql) or the URL (post).
	Target string
	// Payload is the notification's payload or the POST's body; nil is
	// NULL.
	Payload *string
	// Args are an sql entry's parameters, as text; a nil element is NULL.
	Args []*string
	// Role is the role that recorded the entry, which an sql entry runs
	// as.
	Role string
	// Pinned is set while the entry's rule is as it was when the entry was
	// recorded; an entry that is not is not run.
	Pinned bool
	// Attempts is the number of attempts before this one.
	Attempts int
}

// Settings say how entries are delivered. A zero field takes its default.
type Settings struct {
	// Client sends the POSTs. The default keeps Workers idle connections
	// per host, so that parallel deliveries reuse them, connects only to
	// Destinations, ignores the environment's HTTP proxy, and does not
	// follow redirects, which would turn the POST into a GET and could
	// lead anywhere: a 3xx is a failure. A Client given here is used as it
	// is, Destinations aside.
	Client *http.Client
	// Destinations are where post entries may go; nil allows only public
	// addresses.
	Destinations *Destinations
	// Timeout bounds each delivery: a POST, or the transaction of a
	// notify or sql entry. Default 10s.
	Timeout time.Duration
	// MaxAttempts is how many failed attempts make an entry dead. Default
	// 10.
	MaxAttempts int
	// Backoff is the wait after the first failed attempt, doubling with
	// each further one up to MaxBackoff. Defaults 1s and 10m.
	Backoff, MaxBackoff time.Duration
	// Batch is how many entries one round claims. Default 256.
	Batch int
	// Workers is how many keys are delivered at once. Default 32.
	Workers int
	// Poll is how often the dispatcher looks for due entries when no
	// notification arrives. Default 1s.
	Poll time.Duration
	// Logger receives the dispatcher's logs; the zero value drops them.
	Logger zerolog.Logger
}

// Config is what a Dispatcher needs.
type Config struct {
	// Connect opens a connection to the database, as a role that may
	// read and update pgrules.outbox (its owner), to claim entries and
	// record their outcomes.
	Connect func(ctx context.Context) (*pgx.Conn, error)
	// ConnectRun opens the connection that notify and sql entries run on,
	// as their roles; nil: Connect. Its role should have no rights of its
	// own and be granted the roles that write tables with events
	// (SECURITY.md): an entry runs with its role's rights, and code that
	// could step out of it would find no more than that login role's.
	ConnectRun func(ctx context.Context) (*pgx.Conn, error)
	// RunSQL, when set, runs an sql entry (its Target with its Args, as
	// its Role, in a transaction of its own) on conn, which is idle and
	// belongs to the dispatcher. Nil: the dispatcher runs it.
	RunSQL func(ctx context.Context, conn *pgconn.PgConn, e Entry) error
	Settings
}

func (s Settings) withDefaults() Settings {
	if s.Timeout <= 0 {
		s.Timeout = 10 * time.Second
	}
	if s.MaxAttempts <= 0 {
		s.MaxAttempts = 10
	}
	if s.Backoff <= 0 {
		s.Backoff = time.Second
	}
	if s.MaxBackoff <= 0 {
		s.MaxBackoff = 10 * time.Minute
	}
	if s.MaxBackoff < s.Backoff {
		s.MaxBackoff = s.Backoff
	}
	if s.Batch <= 0 {
		s.Batch = 256
	}
	if s.Workers <= 0 {
		s.Workers = 32
	}
	if s.Poll <= 0 {
		s.Poll = time.Second
	}
	if s.Client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = s.Workers
		t.MaxIdleConns = 0
		t.Proxy = nil
		t.DialContext = s.Destinations.dialer(&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second})
		s.Client = &http.Client{
			Transport:     t,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return s
}

// backoff is the wait after an entry's attempts-th failed attempt.
func (s *Settings) backoff(attempts int) time.Duration {
	d := s.Backoff
	for i := 1; i < attempts && d < s.MaxBackoff; i++ {
		d *= 2
	}
	return jitter(min(d, s.MaxBackoff))
}

// jitter spreads d by ±20%, so that what failed together does not retry
// together.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
