package quantize

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// afterHeader returns a stream without its magic and header record.
func afterHeader(tb testing.TB, b []byte) []byte {
	tb.Helper()
	const magicLen, frameLen = 8, 9 // tensorstream's framing (docs/tensorstream.md)
	n := magicLen + frameLen + int(binary.LittleEndian.Uint32(b[magicLen+1:]))
	if n > len(b) {
		tb.Fatalf("stream of %d bytes has a header of %d", len(b), n)
	}
	return b[n:]
}

// bothCheckModes runs f with the input checksummed on reading and by
// verifying goroutines (checkOnRead), whatever the cores.
func bothCheckModes(t *testing.T, f func(t *testing.T)) {
	for _, on := range []bool{false, true} {
		testCheckOnRead = &on
		name := "verify-apart"
		if on {
			name = "check-on-read"
		}
		t.Run(name, f)
		testCheckOnRead = nil
	}
}

// Kept tensors go through with the chunk frames they came in, as
// tensorstream.CopyTensor forwards them, whatever the input buffer size:
// the output after the header is the input's byte for byte. The input has
// chunks of 1000 bytes, a tensor already in bnb4 (its nested offset travels
// in its trailer) and an empty one.
func TestKeptTensorsKeepTheirFrames(t *testing.T) {
	var b bytes.Buffer
	w := tensorstream.NewWriterSize(&b, 1000)
	h := &tensorstream.Header{}
	h.AddStage("detect", "test", nil)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 10_500)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	q := &tensorstream.QuantState{Type: "nf4", BlockSize: 64, DoubleQuant: true, NestedBlockSize: 256}
	for _, ts := range []*tensorstream.Tensor{
		{Name: "a", DType: tensorstream.BF16, Shape: []int64{5250}, Encoding: tensorstream.Raw, Size: 10_500},
		{Name: "empty", DType: tensorstream.F32, Shape: []int64{0}, Encoding: tensorstream.Raw},
		{Name: "q", DType: tensorstream.BF16, Shape: []int64{128, 128}, Encoding: tensorstream.BNB4, Quant: q,
			Size: quant.SizesFor(128*128, quant.DefaultParams()).Total()},
	} {
		if err := w.WriteTensor(ts); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(payload[:ts.Size]); err != nil {
			t.Fatal(err)
		}
		if ts.Quant != nil {
			ts.Quant.NestedOffset = 0.0123
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	in := b.Bytes()
	bothCheckModes(t, func(t *testing.T) {
		for _, chunk := range []int{1000, 2500, 0} {
			o := cpuOptions()
			o.ChunkSize = chunk
			out, sum := mustRun(t, in, o)
			if !bytes.Equal(afterHeader(t, out), afterHeader(t, in)) {
				t.Errorf("chunk %d: kept tensors are not the input's frames byte for byte", chunk)
			}
			if sum.Kept != 3 || sum.Quantized != 0 {
				t.Errorf("chunk %d: summary %+v", chunk, sum)
			}
		}
	})
}

// An error of the work stops the reading, checksumming and writing
// goroutines: Run returns it with none of them left behind.
func TestErrorStopsThePipeline(t *testing.T) {
	specs := []spec{{name: "bad", dt: tensorstream.F32, shape: []int64{64, 64}, quantize: true}}
	for i := range 20 {
		specs = append(specs, spec{name: "w" + string(rune('a'+i)), dt: tensorstream.BF16, shape: []int64{256, 256}, quantize: true})
	}
	bad := randomPayload(rand.New(rand.NewPCG(1, 1)), tensorstream.F32, 64*64)
	binary.LittleEndian.PutUint32(bad[4*3000:], math.Float32bits(float32(math.NaN())))
	specs[0].payload = bad
	in := makeStream(t, specs...)
	before := runtime.NumGoroutine()
	bothCheckModes(t, func(t *testing.T) {
		for _, chunk := range []int{1000, 0} {
			o := cpuOptions()
			o.ChunkSize = chunk
			_, err := Run(bytes.NewReader(in), &bytes.Buffer{}, o)
			var nf *quant.NonFiniteError
			if !errors.As(err, &nf) || nf.Index != 3000 {
				t.Fatalf("chunk %d: %v, want the NaN at 3000", chunk, err)
			}
		}
	})
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left running after Run returned (%d before)", runtime.NumGoroutine()-before, before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A checksum error in a piece that the reading goroutine has long passed is
// still reported for its tensor, before anything of later tensors.
func TestChecksumErrorInOrder(t *testing.T) {
	in := detectStream(t, fixtures.Path(t, "models", "llama"))
	_, items := readAll(t, in)
	target := items[len(items)/2]
	at := bytes.Index(in, target.payload[:64])
	if at < 0 || len(target.payload) < 200 {
		t.Fatal("payload not found")
	}
	bad := bytes.Clone(in)
	bad[at+100] ^= 1
	bothCheckModes(t, func(t *testing.T) {
		for _, chunk := range []int{64, 0} {
			o := cpuOptions()
			o.ChunkSize = chunk
			_, _, err := run(t, bad, o)
			var se *tensorstream.Error
			if !errors.Is(err, tensorstream.ErrChecksum) || !errors.As(err, &se) || se.Tensor != target.t.Name {
				t.Errorf("chunk %d: %v, want a checksum error in %s", chunk, err, target.t.Name)
			}
		}
	})
}
