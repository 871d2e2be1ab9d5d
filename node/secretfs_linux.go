package node

import "syscall"

// onTmpfs reports whether dir is on a tmpfs or ramfs (memory only).
func onTmpfs(dir string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false
	}
	return st.Type == 0x01021994 || st.Type == 0x858458f6 // TMPFS_MAGIC, RAMFS_MAGIC
}
