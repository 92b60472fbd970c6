//go:build !linux

package sqlparse

// threadStackBytes is the C stack of the threads cgo calls run on: the
// smallest default among the other systems (macOS's 512 KiB).
func threadStackBytes() uint64 { return 512 << 10 }
