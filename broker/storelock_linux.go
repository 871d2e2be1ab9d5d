package broker

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lockHolder returns the PID holding a flock on path (bbolt's lock), from
// /proc/locks, or 0. A line reads "1: FLOCK  ADVISORY  WRITE 20115
// fe:00:753921 0 EOF": the holder's PID, then major:minor:inode of the
// file; a process waiting for the lock has "->" after the number.
func lockHolder(path string) int {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0
	}
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	dev := uint64(st.Dev) // uint32 on some architectures
	major := (dev>>8)&0xfff | (dev>>32)&^0xfff
	minor := dev&0xff | (dev>>12)&^0xff
	exact := fmt.Sprintf("%02x:%02x:%d", major, minor, st.Ino)
	ino := ":" + strconv.FormatUint(uint64(st.Ino), 10)
	var byInode []int // the device can read differently (btrfs subvolumes, overlays)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "FLOCK" {
			continue
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil {
			continue
		}
		if f[5] == exact {
			return pid
		}
		if strings.HasSuffix(f[5], ino) {
			byInode = append(byInode, pid)
		}
	}
	if len(byInode) == 1 {
		return byInode[0]
	}
	return 0
}
