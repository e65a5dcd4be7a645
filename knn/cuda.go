//go:build linux

package knn

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// The CUDA device. It loads the CUDA driver (libcuda) and NVRTC at run time with purego, so
// lemon builds and runs without CUDA, and compiles its kernel for the GPU it finds. NVRTC is
// looked up as $LEMON_NVRTC_LIB, then libnvrtc.so, libnvrtc.so.13 and libnvrtc.so.12 on the
// library path.

// cudaSource is the kernel: a 64 x 64 tile of float32 dot products per thread block (16 x 16
// threads, 4 x 4 each, one fused multiply-add per coordinate in order), filtered against the
// thresholds. Passing pairs are appended to out with an atomic counter.
const cudaSource = `
extern "C" __global__ void lemon_hits(const float* __restrict__ A, const float* __restrict__ B, int dim,
	int a0, int a1, int b0, int b1, const float* __restrict__ rowThr, const float* __restrict__ colThr,
	int diag, unsigned int* count, int4* out, unsigned int cap) {
	__shared__ float As[16][65];
	__shared__ float Bs[16][65];
	const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
	const int rowBase = a0 + blockIdx.y * 64, colBase = b0 + blockIdx.x * 64;
	if (diag && colBase + 63 < rowBase) return;
	float acc[4][4];
	for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
	for (int k0 = 0; k0 < dim; k0 += 16) {
		for (int l = tid; l < 64 * 16; l += 256) {
			int r = l / 16, d = l % 16, gd = k0 + d;
			int gr = rowBase + r, gc = colBase + r;
			As[d][r] = (gr < a1 && gd < dim) ? A[(long long)gr * dim + gd] : 0.f;
			Bs[d][r] = (gc < b1 && gd < dim) ? B[(long long)gc * dim + gd] : 0.f;
		}
		__syncthreads();
		for (int d = 0; d < 16; d++) {
			float av[4], bv[4];
			for (int i = 0; i < 4; i++) av[i] = As[d][ty + 16 * i];
			for (int j = 0; j < 4; j++) bv[j] = Bs[d][tx + 16 * j];
			for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
		}
		__syncthreads();
	}
	for (int i = 0; i < 4; i++) {
		int r = rowBase + ty + 16 * i;
		if (r >= a1) continue;
		float rt = rowThr[r - a0];
		for (int j = 0; j < 4; j++) {
			int c = colBase + tx + 16 * j;
			if (c >= b1) continue;
			float v = acc[i][j];
			for (int side = 0; side < 2; side++) {
				bool pass = side == 0 ? (v >= rt && (!diag || c >= r))
				                      : (colThr != 0 && v >= colThr[c - b0] && (!diag || c > r));
				if (!pass) continue;
				unsigned int k = atomicAdd(count, 1u);
				if (k < cap) {
					int4 h;
					h.x = r; h.y = c; h.z = __float_as_int(v); h.w = side;
					out[k] = h;
				}
			}
		}
	}
}
`

// cu holds the driver and NVRTC entry points.
var cu struct {
	Init                   func(flags uint32) int32
	DeviceGet              func(dev *int32, ordinal int32) int32
	DeviceGetAttribute     func(v *int32, attr int32, dev int32) int32
	DeviceGetName          func(name *byte, n int32, dev int32) int32
	DevicePrimaryCtxRetain func(ctx *uintptr, dev int32) int32
	CtxSetCurrent          func(ctx uintptr) int32
	CtxSynchronize         func() int32
	ModuleLoadData         func(mod *uintptr, image *byte) int32
	ModuleGetFunction      func(fn *uintptr, mod uintptr, name *byte) int32
	MemAlloc               func(p *uint64, size uint64) int32
	MemFree                func(p uint64) int32
	MemcpyHtoD             func(dst uint64, src unsafe.Pointer, n uint64) int32
	MemcpyDtoH             func(dst unsafe.Pointer, src uint64, n uint64) int32
	MemsetD32              func(dst uint64, v uint32, n uint64) int32
	LaunchKernel           func(fn uintptr, gx, gy, gz, bx, by, bz, shared uint32, stream uintptr, params, extra unsafe.Pointer) int32
	GetErrorString         func(err int32, s **byte) int32
	nvrtcCreateProgram     func(prog *uintptr, src, name *byte, nHeaders int32, headers, names unsafe.Pointer) int32
	nvrtcCompileProgram    func(prog uintptr, nOpts int32, opts unsafe.Pointer) int32
	nvrtcGetPTXSize        func(prog uintptr, n *uint64) int32
	nvrtcGetPTX            func(prog uintptr, ptx *byte) int32
	nvrtcGetProgramLogSize func(prog uintptr, n *uint64) int32
	nvrtcGetProgramLog     func(prog uintptr, log *byte) int32
	nvrtcDestroyProgram    func(prog *uintptr) int32
	malloc                 func(n uint64) unsafe.Pointer
	loaded                 bool
}

func loadCUDA() error {
	if cu.loaded {
		return nil
	}
	open := func(names ...string) (uintptr, error) {
		var errs []string
		for _, n := range names {
			if n == "" {
				continue
			}
			h, err := purego.Dlopen(n, purego.RTLD_NOW|purego.RTLD_GLOBAL)
			if err == nil {
				return h, nil
			}
			errs = append(errs, err.Error())
		}
		return 0, errors.New(strings.Join(errs, "; "))
	}
	libcuda, err := open("libcuda.so.1", "libcuda.so")
	if err != nil {
		return fmt.Errorf("cannot load the CUDA driver (libcuda.so.1): %v", err)
	}
	nvrtc, err := open(os.Getenv("LEMON_NVRTC_LIB"), "libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12")
	if err != nil {
		return fmt.Errorf("cannot load NVRTC (set LEMON_NVRTC_LIB to libnvrtc.so's path): %v", err)
	}
	libc, err := open("libc.so.6")
	if err != nil {
		return err
	}
	for _, f := range []struct {
		lib  uintptr
		fn   any
		name string
	}{
		{libcuda, &cu.Init, "cuInit"}, {libcuda, &cu.DeviceGet, "cuDeviceGet"},
		{libcuda, &cu.DeviceGetAttribute, "cuDeviceGetAttribute"}, {libcuda, &cu.DeviceGetName, "cuDeviceGetName"},
		{libcuda, &cu.DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"}, {libcuda, &cu.CtxSetCurrent, "cuCtxSetCurrent"},
		{libcuda, &cu.CtxSynchronize, "cuCtxSynchronize"}, {libcuda, &cu.ModuleLoadData, "cuModuleLoadData"},
		{libcuda, &cu.ModuleGetFunction, "cuModuleGetFunction"}, {libcuda, &cu.MemAlloc, "cuMemAlloc_v2"},
		{libcuda, &cu.MemFree, "cuMemFree_v2"}, {libcuda, &cu.MemcpyHtoD, "cuMemcpyHtoD_v2"},
		{libcuda, &cu.MemcpyDtoH, "cuMemcpyDtoH_v2"}, {libcuda, &cu.MemsetD32, "cuMemsetD32_v2"},
		{libcuda, &cu.LaunchKernel, "cuLaunchKernel"}, {libcuda, &cu.GetErrorString, "cuGetErrorString"},
		{nvrtc, &cu.nvrtcCreateProgram, "nvrtcCreateProgram"}, {nvrtc, &cu.nvrtcCompileProgram, "nvrtcCompileProgram"},
		{nvrtc, &cu.nvrtcGetPTXSize, "nvrtcGetPTXSize"}, {nvrtc, &cu.nvrtcGetPTX, "nvrtcGetPTX"},
		{nvrtc, &cu.nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize"}, {nvrtc, &cu.nvrtcGetProgramLog, "nvrtcGetProgramLog"},
		{nvrtc, &cu.nvrtcDestroyProgram, "nvrtcDestroyProgram"}, {libc, &cu.malloc, "malloc"},
	} {
		if _, err := purego.Dlsym(f.lib, f.name); err != nil {
			return fmt.Errorf("CUDA: %s not found: %v", f.name, err)
		}
		purego.RegisterLibFunc(f.fn, f.lib, f.name)
	}
	cu.loaded = true
	return nil
}

// check turns a driver error code into an error.
func check(what string, code int32) error {
	if code == 0 {
		return nil
	}
	msg := fmt.Sprintf("error %d", code)
	var s *byte
	if cu.GetErrorString != nil && cu.GetErrorString(code, &s) == 0 && s != nil {
		msg = goString(s)
	}
	return fmt.Errorf("CUDA %s: %s", what, msg)
}

// goString copies a NUL-terminated C string.
func goString(p *byte) string {
	var b []byte
	for i := 0; ; i++ {
		c := *(*byte)(unsafe.Add(unsafe.Pointer(p), i))
		if c == 0 {
			return string(b)
		}
		b = append(b, c)
	}
}

func cstr(s string) *byte {
	b := append([]byte(s), 0)
	return &b[0]
}

// cudaDevice runs the kernel on GPU 0. Calls are serialised: one chunk pass at a time.
type cudaDevice struct {
	mu       sync.Mutex
	ctx      uintptr
	fn       uintptr
	name     string
	count    uint64 // device: the hit counter
	out      uint64 // device: hit buffer
	outCap   int
	thr      uint64 // device: row then column thresholds
	thrCap   int
	params   unsafe.Pointer // C memory: kernel argument pointers, then argument values
	hostHits []int32
}

type cudaBlock struct {
	n, dim int
	rows   [2]uint64 // device pointers, per modality
}

func openCUDA() (device, error) {
	if err := loadCUDA(); err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	d := &cudaDevice{}
	var dev, major, minor int32
	if err := check("init", cu.Init(0)); err != nil {
		return nil, err
	}
	if err := check("device", cu.DeviceGet(&dev, 0)); err != nil {
		return nil, err
	}
	nameBuf := make([]byte, 256)
	cu.DeviceGetName(&nameBuf[0], int32(len(nameBuf)), dev)
	d.name = strings.TrimRight(string(nameBuf), "\x00")
	cu.DeviceGetAttribute(&major, 75, dev) // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
	cu.DeviceGetAttribute(&minor, 76, dev)
	if err := check("context", cu.DevicePrimaryCtxRetain(&d.ctx, dev)); err != nil {
		return nil, err
	}
	if err := check("context", cu.CtxSetCurrent(d.ctx)); err != nil {
		return nil, err
	}
	ptx, err := compilePTX(cudaSource, fmt.Sprintf("--gpu-architecture=compute_%d%d", major, minor))
	if err != nil {
		return nil, err
	}
	var mod uintptr
	if err := check("loading the kernel", cu.ModuleLoadData(&mod, &ptx[0])); err != nil {
		return nil, err
	}
	fname := cstr("lemon_hits")
	err = check("kernel", cu.ModuleGetFunction(&d.fn, mod, fname))
	runtime.KeepAlive(fname)
	if err != nil {
		return nil, err
	}
	d.outCap = deviceMaxHits
	if err := d.alloc(&d.count, 4); err != nil {
		return nil, err
	}
	if err := d.alloc(&d.out, uint64(d.outCap)*16); err != nil {
		return nil, err
	}
	d.thrCap = deviceRows + deviceCols
	if err := d.alloc(&d.thr, uint64(d.thrCap)*4); err != nil {
		return nil, err
	}
	d.params = cu.malloc(13 * 16)
	if d.params == nil {
		return nil, errors.New("CUDA: out of host memory")
	}
	return d, nil
}

func (d *cudaDevice) alloc(p *uint64, n uint64) error {
	return check(fmt.Sprintf("allocating %d bytes", n), cu.MemAlloc(p, max(n, 4)))
}

// compilePTX compiles CUDA C source to PTX with NVRTC.
func compilePTX(src, arch string) ([]byte, error) {
	var prog uintptr
	csrc, cname := cstr(src), cstr("lemon.cu")
	err := nvrtcCheck("create", cu.nvrtcCreateProgram(&prog, csrc, cname, 0, nil, nil))
	runtime.KeepAlive(csrc)
	runtime.KeepAlive(cname)
	if err != nil {
		return nil, err
	}
	defer cu.nvrtcDestroyProgram(&prog)
	opts := []*byte{cstr(arch), cstr("--fmad=true")}
	code := cu.nvrtcCompileProgram(prog, int32(len(opts)), unsafe.Pointer(&opts[0]))
	runtime.KeepAlive(opts)
	if code != 0 {
		var n uint64
		cu.nvrtcGetProgramLogSize(prog, &n)
		log := make([]byte, n+1)
		cu.nvrtcGetProgramLog(prog, &log[0])
		return nil, fmt.Errorf("NVRTC: compiling the kernel failed (%d): %s", code, strings.TrimRight(string(log), "\x00"))
	}
	var n uint64
	if err := nvrtcCheck("PTX size", cu.nvrtcGetPTXSize(prog, &n)); err != nil {
		return nil, err
	}
	ptx := make([]byte, n+1)
	if err := nvrtcCheck("PTX", cu.nvrtcGetPTX(prog, &ptx[0])); err != nil {
		return nil, err
	}
	return ptx, nil
}

func nvrtcCheck(what string, code int32) error {
	if code != 0 {
		return fmt.Errorf("NVRTC %s: error %d", what, code)
	}
	return nil
}

func (d *cudaDevice) upload(b *Block) (deviceBlock, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := check("context", cu.CtxSetCurrent(d.ctx)); err != nil {
		return nil, err
	}
	cb := &cudaBlock{n: b.Len(), dim: b.Dim}
	for m := range 2 {
		rows := rowsOf(b, m)
		if err := d.alloc(&cb.rows[m], uint64(len(rows))*4); err != nil {
			d.freeLocked(cb)
			return nil, err
		}
		if len(rows) > 0 {
			if err := check("copying rows", cu.MemcpyHtoD(cb.rows[m], unsafe.Pointer(&rows[0]), uint64(len(rows))*4)); err != nil {
				d.freeLocked(cb)
				return nil, err
			}
		}
	}
	return cb, nil
}

func (d *cudaDevice) free(b deviceBlock) {
	d.mu.Lock()
	defer d.mu.Unlock()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cu.CtxSetCurrent(d.ctx)
	d.freeLocked(b.(*cudaBlock))
}

func (d *cudaDevice) freeLocked(cb *cudaBlock) {
	for m := range 2 {
		if cb.rows[m] != 0 {
			cu.MemFree(cb.rows[m])
			cb.rows[m] = 0
		}
	}
}

func (d *cudaDevice) hits(m int, a, b deviceBlock, a0, a1, b0, b1 int, rowThr, colThr []float32, diag bool, maxHits int, out []hit) ([]hit, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := check("context", cu.CtxSetCurrent(d.ctx)); err != nil {
		return out, false, err
	}
	ca, cb := a.(*cudaBlock), b.(*cudaBlock)
	if len(rowThr)+len(colThr) > d.thrCap {
		return out, false, fmt.Errorf("CUDA: %d thresholds exceed the buffer of %d", len(rowThr)+len(colThr), d.thrCap)
	}
	if err := check("copying thresholds", cu.MemcpyHtoD(d.thr, unsafe.Pointer(&rowThr[0]), uint64(len(rowThr))*4)); err != nil {
		return out, false, err
	}
	colPtr := uint64(0)
	if colThr != nil {
		colPtr = d.thr + uint64(len(rowThr))*4
		if err := check("copying thresholds", cu.MemcpyHtoD(colPtr, unsafe.Pointer(&colThr[0]), uint64(len(colThr))*4)); err != nil {
			return out, false, err
		}
	}
	if err := check("clearing the counter", cu.MemsetD32(d.count, 0, 1)); err != nil {
		return out, false, err
	}
	limit := min(maxHits, d.outCap)
	diagFlag := int32(0)
	if diag {
		diagFlag = 1
	}
	// Kernel arguments live in C memory: 13 pointers, then 13 8-byte value slots.
	vals := unsafe.Add(d.params, 13*8)
	ptrs := unsafe.Slice((*unsafe.Pointer)(d.params), 13)
	slot := func(i int) unsafe.Pointer { ptrs[i] = unsafe.Add(vals, i*8); return ptrs[i] }
	*(*uint64)(slot(0)) = ca.rows[m]
	*(*uint64)(slot(1)) = cb.rows[m]
	*(*int32)(slot(2)) = int32(ca.dim)
	*(*int32)(slot(3)) = int32(a0)
	*(*int32)(slot(4)) = int32(a1)
	*(*int32)(slot(5)) = int32(b0)
	*(*int32)(slot(6)) = int32(b1)
	*(*uint64)(slot(7)) = d.thr
	*(*uint64)(slot(8)) = colPtr
	*(*int32)(slot(9)) = diagFlag
	*(*uint64)(slot(10)) = d.count
	*(*uint64)(slot(11)) = d.out
	*(*uint32)(slot(12)) = uint32(limit)
	gx, gy := uint32((b1-b0+63)/64), uint32((a1-a0+63)/64)
	if err := check("launching the kernel", cu.LaunchKernel(d.fn, gx, gy, 1, 16, 16, 1, 0, 0, d.params, nil)); err != nil {
		return out, false, err
	}
	if err := check("running the kernel", cu.CtxSynchronize()); err != nil {
		return out, false, err
	}
	var count uint32
	if err := check("reading the counter", cu.MemcpyDtoH(unsafe.Pointer(&count), d.count, 4)); err != nil {
		return out, false, err
	}
	if int(count) > limit {
		return out, false, nil
	}
	if count == 0 {
		return out, true, nil
	}
	if cap4 := 4 * int(count); len(d.hostHits) < cap4 {
		d.hostHits = make([]int32, cap4)
	}
	if err := check("reading hits", cu.MemcpyDtoH(unsafe.Pointer(&d.hostHits[0]), d.out, uint64(count)*16)); err != nil {
		return out, false, err
	}
	for k := 0; k < int(count); k++ {
		h := d.hostHits[4*k : 4*k+4]
		out = append(out, hit{row: h[0], col: h[1], dot: math.Float32frombits(uint32(h[2])), colSide: h[3] == 1})
	}
	return out, true, nil
}
