package onnx

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	ort "github.com/yalue/onnxruntime_go"
)

// Options configures an encoder's session.
type Options struct {
	// Device is "cpu" (also "") or "cuda"; "cuda:N" picks GPU N.
	Device string
	// IntraOpThreads is the number of threads one Run may use; 0 leaves it
	// to ONNX Runtime (one per physical core).
	IntraOpThreads int
	// NoSpinning makes the intra-op threads sleep when they run out of work instead of
	// spinning for the next parallel section, which leaves the cores to work running beside
	// the encoder (the embed stage's image decoding) at some cost in latency between ops.
	NoSpinning bool
	// BatchSize is the most rows passed to one Run; Encode splits larger
	// batches. 0 means no limit.
	BatchSize int
	// InputName and OutputName pick the model's input and output tensors;
	// "" reads them from the model: its only input (output), else the one
	// named like Hugging Face's CLIP exports (pixel_values / input_ids,
	// image_embeds / text_embeds).
	InputName, OutputName string
	// ImageSize is S for image models whose input has dynamic height and
	// width (Hugging Face exports); 0 requires the model to fix it.
	ImageSize int
	// ContextLength is L for text models with a dynamic sequence axis; 0
	// means DefaultContextLength there. Ignored (but must agree) when the
	// model fixes it.
	ContextLength int
}

// DefaultContextLength is CLIP's text context length, used for text models
// whose sequence axis is dynamic.
const DefaultContextLength = 77

// ErrNoCUDA is returned (wrapped) when Device asks for CUDA and the loaded
// ONNX Runtime library was built without the CUDA execution provider.
var ErrNoCUDA = errors.New("this ONNX Runtime build has no CUDA execution provider; install the GPU build (see README)")

// encoder is what image and text encoders share: one session, one input
// tensor (plus, for some text exports, an attention mask) and one float32
// output of dim values per row.
type encoder struct {
	path       string
	sess       *ort.DynamicAdvancedSession
	inName     string
	maskName   string // text only: "attention_mask" when the model takes one
	outName    string
	dim        int
	fixedBatch int // > 0 when the model's batch axis is fixed: every Run gets exactly this many rows
	maxBatch   int // most rows per Run; 0 = no limit
}

// ImageEncoder runs a CLIP image tower: float32 pixels [batch,3,S,S],
// already resized and normalised (embed/imageprep), to [batch,D].
type ImageEncoder struct {
	encoder
	size int
}

// TextEncoder runs a CLIP text tower: int64 token ids [batch,L] (from
// embed/tokenizer, end-of-text being the largest id) to [batch,D].
type TextEncoder struct {
	encoder
	contextLength int
}

// NewImageEncoder loads an image encoder, checking first that the model
// takes float32 [batch,3,S,S] and gives float32 [batch,D].
func NewImageEncoder(modelPath string, o Options) (*ImageEncoder, error) {
	so, err := sessionOptions(o)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	in, out, err := inspect(modelPath, o, "pixel_values", "image_embeds")
	if err != nil {
		return nil, err
	}
	if len(in) != 1 {
		return nil, fmt.Errorf("%s: model has inputs %s; an image encoder takes one (set InputName)", modelPath, names(in))
	}
	want := "want float32 [batch,3,S,S]"
	d := in[0].Dimensions
	if in[0].DataType != ort.TensorElementDataTypeFloat || len(d) != 4 || (d[1] != 3 && d[1] >= 0) {
		return nil, fmt.Errorf("%s: input %s is %s, %s", modelPath, in[0].Name, describe(in[0]), want)
	}
	size := 0
	switch {
	case d[2] > 0 && d[2] == d[3]:
		size = int(d[2])
		if o.ImageSize != 0 && o.ImageSize != size {
			return nil, fmt.Errorf("%s: input %s is %s but ImageSize is %d", modelPath, in[0].Name, describe(in[0]), o.ImageSize)
		}
	case d[2] < 0 && d[3] < 0 && o.ImageSize > 0:
		size = o.ImageSize
	case d[2] < 0 && d[3] < 0:
		return nil, fmt.Errorf("%s: input %s is %s with dynamic height and width; set the image size (Options.ImageSize, e.g. 224)", modelPath, in[0].Name, describe(in[0]))
	default:
		return nil, fmt.Errorf("%s: input %s is %s, %s (square, fixed S)", modelPath, in[0].Name, describe(in[0]), want)
	}
	e := &ImageEncoder{size: size}
	if err := e.open(modelPath, so, o, in[0], "", out); err != nil {
		return nil, err
	}
	return e, nil
}

// NewTextEncoder loads a text encoder, checking first that the model takes
// int64 [batch,L] (and optionally an int64 [batch,L] attention_mask) and
// gives float32 [batch,D].
func NewTextEncoder(modelPath string, o Options) (*TextEncoder, error) {
	so, err := sessionOptions(o)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	in, out, err := inspect(modelPath, o, "input_ids", "text_embeds")
	if err != nil {
		return nil, err
	}
	// Hugging Face exports take an attention mask beside the ids.
	var mask *ort.InputOutputInfo
	if len(in) == 2 && in[1].Name == "attention_mask" {
		mask = &in[1]
	} else if len(in) != 1 {
		return nil, fmt.Errorf("%s: model has inputs %s; a text encoder takes token ids and at most an attention_mask (set InputName)", modelPath, names(in))
	}
	ids := in[0]
	want := "want int64 [batch,L]"
	d := ids.Dimensions
	if ids.DataType != ort.TensorElementDataTypeInt64 || len(d) != 2 {
		return nil, fmt.Errorf("%s: input %s is %s, %s", modelPath, ids.Name, describe(ids), want)
	}
	length := int(d[1])
	switch {
	case length > 0 && o.ContextLength != 0 && o.ContextLength != length:
		return nil, fmt.Errorf("%s: input %s is %s but ContextLength is %d", modelPath, ids.Name, describe(ids), o.ContextLength)
	case length <= 0 && o.ContextLength > 0:
		length = o.ContextLength
	case length <= 0:
		length = DefaultContextLength
	}
	maskName := ""
	if mask != nil {
		if mask.DataType != ort.TensorElementDataTypeInt64 || len(mask.Dimensions) != 2 {
			return nil, fmt.Errorf("%s: input %s is %s, want int64 [batch,L]", modelPath, mask.Name, describe(*mask))
		}
		maskName = mask.Name
	}
	e := &TextEncoder{contextLength: length}
	if err := e.open(modelPath, so, o, ids, maskName, out); err != nil {
		return nil, err
	}
	return e, nil
}

// CheckPair checks that an image and a text encoder embed into the same
// dimension, as a CLIP pair must.
func CheckPair(img *ImageEncoder, txt *TextEncoder) error {
	if img.dim != txt.dim {
		return fmt.Errorf("%s: output dimension %d but image encoder gives %d (%s)", txt.path, txt.dim, img.dim, img.path)
	}
	return nil
}

// Size is the image side S the model takes.
func (e *ImageEncoder) Size() int { return e.size }

// Dim is the embedding dimension D.
func (e *ImageEncoder) Dim() int { return e.dim }

// Dim is the embedding dimension D.
func (e *TextEncoder) Dim() int { return e.dim }

// Close releases the session. Safe to call more than once.
func (e *ImageEncoder) Close() error { return e.close() }

// Close releases the session. Safe to call more than once.
func (e *TextEncoder) Close() error { return e.close() }

// ContextLength is the token row length L the model takes (77 for CLIP).
func (e *TextEncoder) ContextLength() int { return e.contextLength }

// Encode embeds batch images: pixels holds batch*3*S*S values, image after
// image, channel-major. It returns batch*D values, row i the embedding of
// image i.
func (e *ImageEncoder) Encode(pixels []float32, batch int) ([]float32, error) {
	row := 3 * e.size * e.size
	if batch < 0 || len(pixels) != batch*row {
		return nil, fmt.Errorf("%s: Encode got %d pixel values for batch %d, want %d (batch*3*%d*%d)",
			e.path, len(pixels), batch, batch*row, e.size, e.size)
	}
	return e.run(batch, func(lo, n, rows int) ([]ort.Value, error) {
		x, err := ort.NewTensor(ort.NewShape(int64(rows), 3, int64(e.size), int64(e.size)), padded(pixels[lo*row:(lo+n)*row], rows*row))
		if err != nil {
			return nil, err
		}
		return []ort.Value{x}, nil
	})
}

// Encode embeds batch captions: tokens holds batch rows of ContextLength
// ids. It returns batch*D values, row i the embedding of caption i.
func (e *TextEncoder) Encode(tokens []int64, batch int) ([]float32, error) {
	L := e.contextLength
	if batch < 0 || len(tokens) != batch*L {
		return nil, fmt.Errorf("%s: Encode got %d token ids for batch %d, want %d (batch*%d)",
			e.path, len(tokens), batch, batch*L, L)
	}
	return e.run(batch, func(lo, n, rows int) ([]ort.Value, error) {
		ids := padded(tokens[lo*L:(lo+n)*L], rows*L)
		x, err := ort.NewTensor(ort.NewShape(int64(rows), int64(L)), ids)
		if err != nil {
			return nil, err
		}
		if e.maskName == "" {
			return []ort.Value{x}, nil
		}
		m, err := ort.NewTensor(ort.NewShape(int64(rows), int64(L)), attentionMask(ids, L))
		if err != nil {
			x.Destroy()
			return nil, err
		}
		return []ort.Value{x, m}, nil
	})
}

// attentionMask is 1 up to and including each row's end-of-text token (its
// largest id, first occurrence) and 0 on the padding after it.
func attentionMask(ids []int64, L int) []int64 {
	mask := make([]int64, len(ids))
	for r := 0; r < len(ids); r += L {
		eot := 0
		for j := 1; j < L; j++ {
			if ids[r+j] > ids[r+eot] {
				eot = j
			}
		}
		for j := 0; j <= eot; j++ {
			mask[r+j] = 1
		}
	}
	return mask
}

// padded returns s extended with zeros to n elements (a copy only when
// needed: models with a fixed batch axis get whole batches).
func padded[T any](s []T, n int) []T {
	if len(s) == n {
		return s
	}
	p := make([]T, n)
	copy(p, s)
	return p
}

func (e *encoder) close() error {
	if e.sess == nil {
		return nil
	}
	err := e.sess.Destroy()
	e.sess = nil
	return err
}

// run encodes batch rows in chunks of at most maxBatch rows. inputs builds a
// chunk's input tensors from rows lo..lo+n, padded to rows rows; the output
// tensor wraps the result slice, so ONNX Runtime writes into it directly.
func (e *encoder) run(batch int, inputs func(lo, n, rows int) ([]ort.Value, error)) ([]float32, error) {
	if e.sess == nil {
		return nil, fmt.Errorf("%s: encoder is closed", e.path)
	}
	out := make([]float32, batch*e.dim)
	step := batch
	if e.maxBatch > 0 {
		step = min(batch, e.maxBatch)
	}
	for lo := 0; lo < batch; lo += step {
		n := min(step, batch-lo)
		rows := n
		if e.fixedBatch > 0 {
			rows = e.fixedBatch
		}
		dst := out[lo*e.dim : (lo+n)*e.dim]
		if err := e.runChunk(inputs, lo, n, rows, dst); err != nil {
			return nil, fmt.Errorf("%s: %w", e.path, err)
		}
	}
	return out, nil
}

func (e *encoder) runChunk(inputs func(lo, n, rows int) ([]ort.Value, error), lo, n, rows int, dst []float32) error {
	in, err := inputs(lo, n, rows)
	if err != nil {
		return err
	}
	defer func() {
		for _, v := range in {
			v.Destroy()
		}
	}()
	res := padded(dst, rows*e.dim)
	y, err := ort.NewTensor(ort.NewShape(int64(rows), int64(e.dim)), res)
	if err != nil {
		return err
	}
	defer y.Destroy()
	if err := e.sess.Run(in, []ort.Value{y}); err != nil {
		return err
	}
	if len(res) != len(dst) {
		copy(dst, res)
	}
	return nil
}

// inspect checks the model file and reads its inputs and the chosen output,
// without building the real session (so a bad model fails before any heavy
// set-up, such as a GPU session). The chosen input comes first in in, any
// others (a text model's attention_mask) after it.
func inspect(path string, o Options, defIn, defOut string) (in []ort.InputOutputInfo, out ort.InputOutputInfo, err error) {
	if _, err := os.Stat(path); err != nil {
		return nil, out, fmt.Errorf("encoder model: %w", err)
	}
	// A throwaway session, unoptimised and single-threaded: cheap, and
	// ONNX Runtime's own loader checks the file.
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, out, err
	}
	defer so.Destroy()
	so.SetGraphOptimizationLevel(ort.GraphOptimizationLevelDisableAll)
	so.SetIntraOpNumThreads(1)
	ins, outs, err := ort.GetInputOutputInfoWithOptions(path, so)
	if err != nil {
		return nil, out, fmt.Errorf("%s: not a loadable ONNX model: %w", path, err)
	}

	inIdx, err := pick(ins, o.InputName, defIn)
	if err != nil {
		return nil, out, fmt.Errorf("%s: %w", path, err)
	}
	in = append(in, ins[inIdx])
	for i, v := range ins {
		if i != inIdx {
			in = append(in, v)
		}
	}
	outIdx, err := pick(outs, o.OutputName, defOut)
	if err != nil {
		return nil, out, fmt.Errorf("%s: %w", path, err)
	}
	out = outs[outIdx]
	d := out.Dimensions
	if out.DataType != ort.TensorElementDataTypeFloat || len(d) != 2 || d[1] <= 0 {
		return nil, out, fmt.Errorf("%s: output %s is %s, want float32 [batch,D] with D fixed", path, out.Name, describe(out))
	}
	return in, out, nil
}

// pick finds the tensor named name, or if name is "", the only tensor or
// else the one named def.
func pick(vs []ort.InputOutputInfo, name, def string) (int, error) {
	kind := "input"
	if def == "image_embeds" || def == "text_embeds" {
		kind = "output"
	}
	if name != "" {
		for i, v := range vs {
			if v.Name == name {
				return i, nil
			}
		}
		return 0, fmt.Errorf("no %s named %q (%ss: %s)", kind, name, kind, names(vs))
	}
	if len(vs) == 1 {
		return 0, nil
	}
	for i, v := range vs {
		if v.Name == def {
			return i, nil
		}
	}
	return 0, fmt.Errorf("model has %ss %s and none is named %s; set %sName", kind, names(vs), def, strings.ToUpper(kind[:1])+kind[1:])
}

// open builds the session for the checked input(s) and output.
func (e *encoder) open(path string, so *ort.SessionOptions, o Options, in ort.InputOutputInfo, maskName string, out ort.InputOutputInfo) error {
	inNames := []string{in.Name}
	if maskName != "" {
		inNames = append(inNames, maskName)
	}
	sess, err := ort.NewDynamicAdvancedSession(path, inNames, []string{out.Name}, so)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	*e = encoder{
		path: path, sess: sess,
		inName: in.Name, maskName: maskName, outName: out.Name,
		dim:      int(out.Dimensions[1]),
		maxBatch: max(o.BatchSize, 0),
	}
	if b := in.Dimensions[0]; b > 0 {
		e.fixedBatch, e.maxBatch = int(b), int(b)
	}
	return nil
}

// sessionOptions initialises the runtime and turns Options into session
// options, appending the CUDA execution provider when asked: a device that
// cannot be had fails here, before any model is read.
func sessionOptions(o Options) (*ort.SessionOptions, error) {
	if err := Init(); err != nil {
		return nil, err
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*ort.SessionOptions, error) {
		so.Destroy()
		return nil, err
	}
	if o.IntraOpThreads < 0 {
		return fail(fmt.Errorf("onnx: IntraOpThreads %d < 0", o.IntraOpThreads))
	}
	if o.IntraOpThreads > 0 {
		if err := so.SetIntraOpNumThreads(o.IntraOpThreads); err != nil {
			return fail(err)
		}
	}
	if o.NoSpinning {
		if err := so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
			return fail(err)
		}
	}
	dev, id, err := parseDevice(o.Device)
	if err != nil {
		return fail(err)
	}
	if dev == "cuda" {
		if err := appendCUDA(so, id); err != nil {
			return fail(err)
		}
	}
	return so, nil
}

// parseDevice splits "cpu", "cuda" or "cuda:N".
func parseDevice(s string) (dev string, id int, err error) {
	switch {
	case s == "" || s == "cpu":
		return "cpu", 0, nil
	case s == "cuda":
		return "cuda", 0, nil
	case strings.HasPrefix(s, "cuda:"):
		id, err := strconv.Atoi(s[len("cuda:"):])
		if err == nil && id >= 0 {
			return "cuda", id, nil
		}
	}
	return "", 0, fmt.Errorf("onnx: unknown device %q (want cpu, cuda or cuda:N)", s)
}

func appendCUDA(so *ort.SessionOptions, id int) error {
	cu, err := ort.NewCUDAProviderOptions()
	if err != nil {
		return cudaError(err)
	}
	defer cu.Destroy()
	if err := cu.Update(map[string]string{"device_id": strconv.Itoa(id)}); err != nil {
		return cudaError(err)
	}
	if err := so.AppendExecutionProviderCUDA(cu); err != nil {
		return cudaError(err)
	}
	return nil
}

// cudaError tells a library without the CUDA execution provider from other
// CUDA set-up failures. A CPU-only build says the provider is "not enabled
// in this build"; a build with the provider bridge but without the provider
// libraries beside it (the CPU library from onnxruntime-node, say) fails to
// open libonnxruntime_providers_shared.so or libonnxruntime_providers_cuda.so.
// Anything else (the provider library found but, for instance, the CUDA or
// cuDNN runtime missing) is reported as it is.
func cudaError(err error) error {
	msg := err.Error()
	if strings.Contains(msg, "not enabled in this build") ||
		strings.Contains(msg, "libonnxruntime_providers_shared.so: cannot open") ||
		strings.Contains(msg, "libonnxruntime_providers_cuda.so: cannot open") {
		return fmt.Errorf("onnx: %w (ONNX Runtime %s: %v)", ErrNoCUDA, ort.GetVersion(), err)
	}
	return fmt.Errorf("onnx: enabling the CUDA execution provider (needs the CUDA and cuDNN runtime libraries ONNX Runtime %s was built for): %w", ort.GetVersion(), err)
}

func names(vs []ort.InputOutputInfo) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = v.Name
	}
	return "[" + strings.Join(s, " ") + "]"
}

// describe renders a tensor's type and shape as "float32 [-1 3 224 224]"
// (-1: dynamic).
func describe(v ort.InputOutputInfo) string {
	if v.OrtValueType != ort.ONNXTypeTensor {
		return fmt.Sprintf("a %s, not a tensor", v.OrtValueType)
	}
	return fmt.Sprintf("%s %v", dtypeName(v.DataType), []int64(v.Dimensions))
}

func dtypeName(t ort.TensorElementDataType) string {
	switch t {
	case ort.TensorElementDataTypeFloat:
		return "float32"
	case ort.TensorElementDataTypeFloat16:
		return "float16"
	case ort.TensorElementDataTypeDouble:
		return "float64"
	case ort.TensorElementDataTypeInt64:
		return "int64"
	case ort.TensorElementDataTypeInt32:
		return "int32"
	case ort.TensorElementDataTypeUint8:
		return "uint8"
	}
	return t.String()
}
