package ssh

import "syscall"

type syscallStat struct{ ino uint64 }

func statInode(p string, st *syscallStat) error {
	var s syscall.Stat_t
	if err := syscall.Stat(p, &s); err != nil {
		return err
	}
	st.ino = s.Ino
	return nil
}
