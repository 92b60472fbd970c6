package main

import "syscall"

// procAttr puts a child in its own process group, so that the SIGINT a
// terminal sends to its foreground group on Ctrl-C reaches only this program,
// which then stops the children in order (clients before proxies before
// servers) instead of all of them dying at once mid-measurement. Pdeathsig is
// the backstop for when this program is killed outright and cannot clean up.
// (The kernel ties Pdeathsig to the thread that forked; Go only retires
// threads left locked by a goroutine, which this program never does.)
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM, Credential: cred}
}
