// Command peak measures this machine's limits for lemon's neighbour search, in one run: the
// peak rate of the kernels' arithmetic (a register-only loop of float32 FMAs, and of bf16 dot
// products, on every core at once) and each CPU backend's tile kernel with hot operands, as a
// fraction of its peak. A benchmark, not a test: it prints a Markdown table.
//
//	go run ./bench/peak                 # all cores, 2 s per measurement
//	go run ./bench/peak -workers 1 -seconds 5 -dim 768
package main

import (
	"flag"
	"fmt"
	"log"
	"runtime"
	"time"

	"github.com/lemon-curation/lemon/knn"
)

func main() {
	workers := flag.Int("workers", runtime.NumCPU(), "threads running at once")
	seconds := flag.Float64("seconds", 2, "seconds per measurement")
	dim := flag.Int("dim", 512, "embedding dimension for the tile kernels")
	flag.Parse()
	d := time.Duration(*seconds * float64(time.Second))

	peaks := map[bool]float64{}
	fmt.Printf("| measurement (%d threads) | GFLOP/s | of its peak |\n|---|---:|---:|\n", *workers)
	for _, bf16 := range []bool{false, true} {
		name := map[bool]string{false: "peak: float32 FMA loop (VFMADD231PS, registers only)", true: "peak: bf16 dot loop (VDPBF16PS, registers only)"}[bf16]
		g, ok := knn.Peak(bf16, *workers, d)
		if !ok {
			fmt.Printf("| %s | not on this CPU | |\n", name)
			continue
		}
		peaks[bf16] = g
		fmt.Printf("| %s | %.1f | 1.00 |\n", name, g)
	}
	for _, be := range knn.Backends() {
		g, err := knn.KernelRate(be, *dim, *workers, d)
		if err != nil {
			log.Fatal(err)
		}
		frac := "-"
		if p, ok := peaks[be == "avx512bf16"]; ok && be != "go" {
			frac = fmt.Sprintf("%.2f", g/p)
		}
		fmt.Printf("| tile kernel %s, D=%d, operands in cache | %.1f | %s |\n", be, *dim, g, frac)
	}
}
