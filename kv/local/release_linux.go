package local

import "golang.org/x/sys/unix"

// dropMapped tells the kernel that this process no longer needs the pages
// of [addr, addr+n) resident. For bbolt's read-only MAP_SHARED mapping of
// the file this is safe: the data stays in the page cache and the next
// access faults it back in, unchanged. The caller holds a bbolt
// transaction so that the mapping cannot be replaced meanwhile.
func dropMapped(addr uintptr, n int64) error {
	if n <= 0 {
		return nil
	}
	// The raw call takes the address as a number: building a []byte over
	// the mapping would need an unsafe conversion from uintptr.
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, addr, uintptr(n), unix.MADV_DONTNEED); errno != 0 {
		return errno
	}
	return nil
}
