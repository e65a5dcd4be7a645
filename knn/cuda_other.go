//go:build !linux

package knn

import "errors"

func openCUDA() (device, error) { return nil, errors.New("CUDA is supported on Linux only") }
