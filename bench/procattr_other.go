//go:build !linux

package main

import "syscall"

// procAttr: see procattr_linux.go; other systems have no parent-death signal,
// so a killed benchmark may leave its children running there.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}
