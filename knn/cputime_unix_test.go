//go:build unix

package knn

import "syscall"

// cpuSeconds is this process's user+system CPU time. The benchmarks report it alongside wall
// time because the development machine is shared: wall time there measures the neighbours'
// load as much as this code.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}
