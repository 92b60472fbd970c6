package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// reSocketWrite matches a write system call's line in strace -yy's output,
// whose descriptor strace annotates with the socket's two ends, e.g.
// `write(7<TCP:[127.0.0.1:40112->127.0.0.1:5432]>, "P\0\0\0...", 80) = 80`;
// the line of a call that another thread interrupts ends in
// "<unfinished ...>" and is counted, its "<... write resumed>" is not.
var reSocketWrite = regexp.MustCompile(`\b(?:write|writev|sendto|sendmsg)\(\d+<TCP(?:v6)?:\[(.*)->(.*?)\]>`)

// reCall matches the start of a system call's line in strace -f output,
// after the thread's id; a "<... futex resumed>" line does not match.
var reCall = regexp.MustCompile(`^(?:\d+\s+)?([a-z_0-9]+)\(`)

// tracedCalls are the system calls counted: the socket I/O of a relay,
// and the waits and wake-ups of the goroutines that do it.
const tracedCalls = "write,writev,sendto,sendmsg,read,recvfrom,epoll_pwait,epoll_wait,futex,nanosleep,sched_yield"

// straceCount is what strace saw of the proxy: its writes to the server,
// and every call of tracedCalls by name.
type straceCount struct {
	writes int
	calls  map[string]int
}

// countCalls reads strace output. Writes count when they go to a TCP
// connection whose remote end is on port, on the connections that carry
// atLeast writes or more: the proxy's other connections to the same
// server (the catalog's watcher, the outbox's dispatcher) write now and
// then, on their own clock, and would blur a count per transaction.
func countCalls(r io.Reader, port, atLeast int) (straceCount, error) {
	suffix := ":" + strconv.Itoa(port)
	byConn := map[string]int{}
	out := straceCount{calls: map[string]int{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if m := reCall.FindStringSubmatch(line); m != nil {
			out.calls[m[1]]++
		}
		if m := reSocketWrite.FindStringSubmatch(line); m != nil && strings.HasSuffix(m[2], suffix) {
			byConn[m[1]+"->"+m[2]]++
		}
	}
	for _, c := range byConn {
		if c >= atLeast {
			out.writes += c
		}
	}
	return out, sc.Err()
}

// straceCalls attaches strace to the server's process (every thread) for
// as long as work runs, and counts the process's system calls (see
// countCalls). strace slows every system call it traces, so this counts
// and does not time.
func (h *harness) straceCalls(ctx context.Context, s *server, port, atLeast int, work func() error) (straceCount, error) {
	var none straceCount
	out := filepath.Join(h.tmp, "strace.out")
	cmd := exec.Command("strace", "-f", "-yy", "-e", "trace="+tracedCalls, "-e", "signal=none",
		"-s", "0", "-o", out, "-p", strconv.Itoa(s.cmd.Process.Pid))
	cmd.SysProcAttr = procAttr(nil)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return none, err
	}
	if err := cmd.Start(); err != nil {
		return none, fmt.Errorf("starting strace: %w", err)
	}
	exited := make(chan error, 1)
	var msgs strings.Builder
	attached := make(chan struct{})
	go func() {
		// strace says "Process N attached with M threads" once it
		// traces them all; what it says besides goes into an error.
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case !once && strings.Contains(line, "attached"):
				once = true
				close(attached)
			case !strings.Contains(line, "detached"):
				msgs.WriteString(line + "\n")
			}
		}
		exited <- cmd.Wait()
	}()
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGINT) // strace detaches and exits
		select {
		case err := <-exited:
			return err
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("strace did not detach within 10s")
		}
	}
	select {
	case <-attached:
	case err := <-exited:
		return none, fmt.Errorf("strace exited before attaching (%v): %s", err, msgs.String())
	case <-time.After(10 * time.Second):
		stop()
		return none, fmt.Errorf("strace did not attach within 10s: %s", msgs.String())
	case <-ctx.Done():
		stop()
		return none, ctx.Err()
	}
	workErr := work()
	if err := stop(); err != nil && !interrupted(err) && workErr == nil {
		workErr = fmt.Errorf("strace: %v: %s", err, msgs.String())
	}
	if workErr != nil {
		return none, workErr
	}
	f, err := os.Open(out)
	if err != nil {
		return none, err
	}
	defer f.Close()
	defer os.Remove(out)
	return countCalls(f, port, atLeast)
}

// interrupted tells whether err is the exit of a process by SIGINT: how
// strace ends after detaching on SIGINT.
func interrupted(err error) bool {
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return false
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGINT
}
