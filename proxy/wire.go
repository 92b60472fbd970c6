package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/pgerr"
)

// Protocol codes that appear in the first packet of a connection.
const (
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
	cancelRequestCode = 80877102

	// maxStartupPacket is PostgreSQL's own limit (MAX_STARTUP_PACKET_LENGTH).
	maxStartupPacket = 10000
	// maxAuthMessage is PostgreSQL's limit on a password or SASL message
	// (PG_MAX_AUTH_TOKEN_LENGTH).
	maxAuthMessage = 65535
	// keepLarge is the largest buffer kept for the next message once a
	// message too large for the reader's buffer has been handled: a
	// larger one is dropped with its message, so that one large message
	// does not hold memory for the rest of the session.
	keepLarge = 1 << 20

	ioBufferSize = 16 << 10
)

// errClientGone reports that the client closed its connection between
// messages: nothing is wrong and nobody is told.
var errClientGone = errors.New("client closed the connection")

// errClientDone reports that the client has finished sending, with a
// Terminate or an end of input between messages (a half-closed socket
// gives one while it can still read): what it sent is answered first.
var errClientDone = fmt.Errorf("%w: end of input", errClientGone)

// msgReader reads protocol messages (a type byte, a length, a body) from a
// buffered reader. It hands out bodies that stay valid until the next call.
type msgReader struct {
	r *bufio.Reader
	// max is the largest body accepted, 0 for no limit.
	max int
	// flush runs before any read that would block, so that what was
	// relayed so far reaches the other side before we wait for more.
	flush func() error
	// skip is how much of the buffered input the previous body occupies.
	skip int
	// large holds a body larger than the buffer, up to keepLarge.
	large []byte
}

func newMsgReader(r io.Reader, max int, flush func() error) *msgReader {
	return &msgReader{r: bufio.NewReaderSize(r, ioBufferSize), max: max, flush: flush}
}

// await waits until the next message has begun to arrive, without
// reading it.
func (m *msgReader) await() error {
	m.skipBody()
	if m.r.Buffered() > 0 {
		return nil
	}
	if m.flush != nil {
		if err := m.flush(); err != nil {
			return err
		}
	}
	_, err := m.r.Peek(1)
	return err
}

// header reads the next message's type and body length. The body must be
// consumed with body or copyBody before the next header.
func (m *msgReader) header() (byte, int, error) {
	m.skipBody()
	if m.r.Buffered() < 5 && m.flush != nil {
		if err := m.flush(); err != nil {
			return 0, 0, err
		}
	}
	h, err := m.r.Peek(5)
	if err != nil {
		if len(h) > 0 && errors.Is(err, io.EOF) {
			return 0, 0, pgerr.Fatal(pgerr.ProtocolViolation, "incomplete message from client: connection closed after %d bytes of a header", len(h))
		}
		return 0, 0, err
	}
	typ := h[0]
	length := int(binary.BigEndian.Uint32(h[1:]))
	if length < 4 {
		return typ, 0, pgerr.Fatal(pgerr.ProtocolViolation, "invalid message length %d for message type %q", length, typ)
	}
	n := length - 4
	if m.max > 0 && n > m.max {
		return typ, n, pgerr.Fatal(pgerr.ProgramLimitExceeded, "message of type %q is %d bytes, more than the limit of %d bytes (--max-message-bytes)", typ, n, m.max)
	}
	m.r.Discard(5)
	return typ, n, nil
}

// skipBody drops the body the last call to body lent out, still buffered.
func (m *msgReader) skipBody() {
	if m.skip > 0 {
		m.r.Discard(m.skip) // cannot fail: the bytes are buffered
		m.skip = 0
	}
}

// body returns the n-byte body of the message whose header was just read.
func (m *msgReader) body(n int) ([]byte, error) {
	if n > m.r.Buffered() && m.flush != nil {
		if err := m.flush(); err != nil {
			return nil, err
		}
	}
	if n <= m.r.Size() {
		b, err := m.r.Peek(n)
		if err != nil {
			return nil, truncated(err, len(b), n)
		}
		m.skip = n
		return b, nil
	}
	var b []byte
	if n > keepLarge {
		b = make([]byte, n)
	} else {
		if cap(m.large) < n {
			m.large = make([]byte, n)
		}
		b = m.large[:n]
	}
	if got, err := io.ReadFull(m.r, b); err != nil {
		return nil, truncated(err, got, n)
	}
	return b, nil
}

// copyBody writes the message whose header was just read to w, streaming a
// body larger than the buffer instead of holding it.
func (m *msgReader) copyBody(w *bufio.Writer, typ byte, n int) error {
	if n <= m.r.Size() {
		b, err := m.body(n)
		if err != nil {
			return err
		}
		return writeMessage(w, typ, b)
	}
	writeHeader(w, typ, n)
	if m.flush != nil {
		if err := m.flush(); err != nil {
			return err
		}
	}
	got, err := io.CopyN(w, m.r, int64(n))
	if err != nil {
		return truncated(err, int(got), n)
	}
	return nil
}

func truncated(err error, got, want int) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return pgerr.Fatal(pgerr.ProtocolViolation, "incomplete message: connection closed after %d of %d bytes", got, want)
	}
	return err
}

// writeHeader builds the header in the writer's own free space, so relaying
// a message allocates nothing.
func writeHeader(w *bufio.Writer, typ byte, n int) {
	b := append(w.AvailableBuffer(), typ)
	b = binary.BigEndian.AppendUint32(b, uint32(n+4))
	w.Write(b) // a bufio.Writer's error is sticky and reported by Flush
}

func writeMessage(w *bufio.Writer, typ byte, body []byte) error {
	writeHeader(w, typ, len(body))
	_, err := w.Write(body)
	return err
}

// readStartupPacket reads a length-prefixed packet without a type byte, the
// form of the first message of a connection. It reads directly from r, with
// no buffering, so that nothing sent before a TLS handshake can be mistaken
// for data sent after it.
func readStartupPacket(r io.Reader) ([]byte, error) {
	var h [4]byte
	if n, err := io.ReadFull(r, h[:]); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return nil, errClientGone
		}
		return nil, pgerr.Fatal(pgerr.ProtocolViolation, "incomplete startup packet: %w", err)
	}
	// Like PostgreSQL, the limit applies to the packet after its length word.
	length := int(binary.BigEndian.Uint32(h[:]))
	if length < 8 || length-4 > maxStartupPacket {
		return nil, pgerr.Fatal(pgerr.ProtocolViolation, "invalid length of startup packet: %d", length)
	}
	pkt := make([]byte, length-4)
	if _, err := io.ReadFull(r, pkt); err != nil {
		return nil, pgerr.Fatal(pgerr.ProtocolViolation, "incomplete startup packet: %w", err)
	}
	return pkt, nil
}

// startupParams decodes the name/value pairs of a StartupMessage packet
// (after its protocol version) the way PostgreSQL's ProcessStartupPacket
// does, with the same errors, so that a client gets the answer it would get
// without the proxy.
func startupParams(pkt []byte) (map[string]string, error) {
	params := make(map[string]string)
	b := pkt[4:]
	for len(b) > 0 && b[0] != 0 {
		name, rest, ok := bytes.Cut(b, []byte{0})
		if !ok || len(rest) == 0 {
			break
		}
		value, rest, ok := bytes.Cut(rest, []byte{0})
		if !ok {
			b = nil
			break
		}
		params[string(name)] = string(value)
		b = rest
	}
	if len(b) != 1 {
		return nil, pgerr.Fatal(pgerr.ProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
	}
	if params["user"] == "" {
		return nil, pgerr.Fatal(pgerr.InvalidAuthorization, "no PostgreSQL user name specified in startup packet")
	}
	return params, nil
}

// frontendTypes are the message types a client may send once the session
// has started, as PostgresMain accepts them.
var frontendTypes = [256]bool{
	'B': true, 'C': true, 'd': true, 'c': true, 'f': true, 'D': true, 'E': true,
	'H': true, 'F': true, 'P': true, 'Q': true, 'S': true, 'X': true,
}

// errorResponse turns err into the message a client is sent. An error that
// is not a *pgerr.Error becomes an internal error: the client still gets a
// well-formed answer.
func errorResponse(err error) *pgproto3.ErrorResponse {
	var e *pgerr.Error
	if !errors.As(err, &e) {
		e = &pgerr.Error{Code: pgerr.InternalError, Message: err.Error()}
	}
	sev := e.Severity
	if sev == "" {
		sev = pgerr.SeverityError
	}
	return &pgproto3.ErrorResponse{
		Severity:            sev,
		SeverityUnlocalized: sev,
		Code:                e.Code,
		Message:             e.Message,
		Detail:              e.Detail,
		Hint:                e.Hint,
		SchemaName:          e.Schema,
		TableName:           e.Table,
		ColumnName:          e.Column,
		ConstraintName:      e.Constraint,
		Position:            e.Position,
		InternalPosition:    e.InternalPosition,
		InternalQuery:       e.InternalQuery,
		Where:               e.Where,
		DataTypeName:        e.DataType,
		File:                e.File,
		Line:                e.Line,
		Routine:             e.Routine,
	}
}

// encodeError appends err as an ErrorResponse to w.
func encodeError(w *bufio.Writer, err error) error {
	buf, encErr := errorResponse(err).Encode(nil)
	if encErr != nil {
		return fmt.Errorf("encode error response: %w", encErr)
	}
	_, werr := w.Write(buf)
	return werr
}

// isFatalError reports whether the body of an ErrorResponse says the server
// is ending the connection. It prefers the unlocalized severity (V) to the
// localized one (S), which a translated server may spell differently.
func isFatalError(body []byte) bool {
	var sev string
	for len(body) > 1 {
		field := body[0]
		end := 1
		for end < len(body) && body[end] != 0 {
			end++
		}
		switch field {
		case 'V':
			sev = string(body[1:end])
		case 'S':
			if sev == "" {
				sev = string(body[1:end])
			}
		}
		if end >= len(body) {
			break
		}
		body = body[end+1:]
	}
	return sev == "FATAL" || sev == "PANIC"
}

// noticeCode is the SQLSTATE of a NoticeResponse.
func noticeCode(body []byte) string {
	for len(body) > 1 {
		field := body[0]
		v, rest, ok := bytes.Cut(body[1:], []byte{0})
		if !ok {
			break
		}
		if field == 'C' {
			return string(v)
		}
		body = rest
	}
	return ""
}

// appendMessage appends a message with its header to buf.
func appendMessage(buf []byte, typ byte, body []byte) []byte {
	buf = append(buf, typ)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(body)+4))
	return append(buf, body...)
}

func writeDataRow(w interface{ Write([]byte) (int, error) }, row [][]byte) {
	n := 2
	for _, v := range row {
		n += 4 + len(v)
	}
	buf := make([]byte, 0, 5+n)
	buf = append(buf, 'D')
	buf = binary.BigEndian.AppendUint32(buf, uint32(n+4))
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(row)))
	for _, v := range row {
		if v == nil {
			buf = binary.BigEndian.AppendUint32(buf, 0xffffffff)
			continue
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(v)))
		buf = append(buf, v...)
	}
	w.Write(buf)
}

// cstring returns the NUL-terminated string at the start of b.
func cstring(b []byte) (string, bool) {
	s, _, ok := bytes.Cut(b, []byte{0})
	return string(s), ok
}
