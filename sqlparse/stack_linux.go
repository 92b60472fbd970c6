package sqlparse

import "syscall"

// threadStackBytes is the C stack of the threads cgo calls run on: glibc
// gives new threads the soft RLIMIT_STACK of the process, or 2 MiB when it
// is unlimited.
func threadStackBytes() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_STACK, &r); err != nil || r.Cur == ^uint64(0) || r.Cur == 0 {
		return 2 << 20
	}
	return r.Cur
}
