package quantize

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/detect"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// spec is a tensor of a synthetic stream. A nil payload is filled with
// Gaussian-ish values of dt.
type spec struct {
	name     string
	dt       tensorstream.DType
	shape    []int64
	quantize bool
	payload  []byte
	store    string // the "store" annotation, when set
}

func (s spec) elements() int64 {
	n := int64(1)
	for _, d := range s.shape {
		n *= d
	}
	return n
}

// randomPayload returns n values of dt drawn from a normal distribution
// (integers and FP8 get random bytes).
func randomPayload(rng *rand.Rand, dt tensorstream.DType, n int64) []byte {
	b := make([]byte, n*int64(dt.Size()))
	for i := range n {
		v := float32(rng.NormFloat64() * 0.02)
		switch dt {
		case tensorstream.F32:
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		case tensorstream.F16:
			binary.LittleEndian.PutUint16(b[2*i:], f32ToF16(v))
		case tensorstream.BF16:
			binary.LittleEndian.PutUint16(b[2*i:], f32ToBF16(v))
		default:
			for k := range dt.Size() {
				b[int(i)*dt.Size()+k] = byte(rng.Uint32())
			}
		}
	}
	return b
}

// makeStream writes a stream of the specs with a header like detect's.
func makeStream(tb testing.TB, specs ...spec) []byte {
	tb.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	h := &tensorstream.Header{}
	h.AddStage("detect", "test", nil)
	if err := h.Set("custom", map[string]int{"kept": 1}); err != nil {
		tb.Fatal(err)
	}
	var b bytes.Buffer
	w := tensorstream.NewWriter(&b)
	if err := w.WriteHeader(h); err != nil {
		tb.Fatal(err)
	}
	for _, s := range specs {
		t := &tensorstream.Tensor{Name: s.name, DType: s.dt, Shape: s.shape, Encoding: tensorstream.Raw,
			Size: s.elements() * int64(s.dt.Size())}
		if err := t.SetAnn(tensorstream.AnnQuantize, s.quantize); err != nil {
			tb.Fatal(err)
		}
		if err := t.SetAnn("custom", "x"); err != nil {
			tb.Fatal(err)
		}
		if s.store != "" {
			if err := t.SetAnn(tensorstream.AnnStore, s.store); err != nil {
				tb.Fatal(err)
			}
		}
		p := s.payload
		if p == nil {
			p = randomPayload(rng, s.dt, s.elements())
		}
		if err := w.WriteTensor(t); err != nil {
			tb.Fatal(err)
		}
		if _, err := w.Write(p); err != nil {
			tb.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// detectStream is `detect DIR` with the default policy.
func detectStream(tb testing.TB, dir string) []byte {
	tb.Helper()
	m, err := detect.Open(dir, arch.Policy{})
	if err != nil {
		tb.Fatal(err)
	}
	defer m.Close()
	var b bytes.Buffer
	if err := m.Stream(&b, tensorstream.Stage{Name: "detect", Version: "test"}); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// item is a tensor read back with its payload.
type item struct {
	t       *tensorstream.Tensor
	payload []byte
}

func readAll(tb testing.TB, b []byte) (*tensorstream.Header, []item) {
	tb.Helper()
	r := tensorstream.NewReader(bytes.NewReader(b))
	h, err := r.Header()
	if err != nil {
		tb.Fatal(err)
	}
	var out []item
	for {
		t, err := r.Next()
		if err == io.EOF {
			return h, out
		}
		if err != nil {
			tb.Fatal(err)
		}
		p, err := io.ReadAll(r)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, item{t, p})
	}
}

func cpuOptions() Options {
	o := DefaultOptions()
	o.Device = "cpu"
	return o
}

// run runs the stage on in and returns the output stream.
func run(tb testing.TB, in []byte, o Options) ([]byte, *Summary, error) {
	tb.Helper()
	var out bytes.Buffer
	sum, err := Run(bytes.NewReader(in), &out, o)
	return out.Bytes(), sum, err
}

func mustRun(tb testing.TB, in []byte, o Options) ([]byte, *Summary) {
	tb.Helper()
	out, sum, err := run(tb, in, o)
	if err != nil {
		tb.Fatal(err)
	}
	return out, sum
}

func newRand() *rand.Rand { return rand.New(rand.NewPCG(3, 4)) }

func putU32(b []byte, v uint32) { binary.LittleEndian.PutUint32(b, v) }
func putU16(b []byte, v uint16) { binary.LittleEndian.PutUint16(b, v) }
func getU32(b []byte) uint32    { return binary.LittleEndian.Uint32(b) }
func getU16(b []byte) uint16    { return binary.LittleEndian.Uint16(b) }
