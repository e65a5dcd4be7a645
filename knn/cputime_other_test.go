//go:build !unix

package knn

func cpuSeconds() float64 { return 0 }
