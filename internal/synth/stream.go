package synth

import (
	"fmt"
	"io"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// StreamOptions say what WriteStream writes.
type StreamOptions struct {
	// Bytes is the payload total, rounded down to whole rows; the last tensor
	// is shortened to meet it.
	Bytes int64
	// TensorBytes is each tensor's payload size (0 means 64 MiB), rounded
	// down to a whole number of rows.
	TensorBytes int64
	// Cols is the row length in elements (0 means 4096).
	Cols int64
	// Seed varies the payload.
	Seed uint64
	// ChunkSize is the stream writer's chunk size (0: the writer's default).
	ChunkSize int
}

// poolBytes is the block of generated BF16 values stream payloads are cut
// from: generating every byte would make the generator, not the pipe, the
// thing a pass-through benchmark measures.
const poolBytes = 8 << 20

// WriteStream writes a tensor stream of BF16 matrices [rows, Cols] totalling
// opt.Bytes of payload to w, generating payloads on the fly (nothing touches
// disk). Each tensor is annotated as a quantizable MLP weight of its own
// layer, so quantize can consume the stream as it comes. It returns the
// payload bytes written.
func WriteStream(w io.Writer, opt StreamOptions) (int64, error) {
	cols := opt.Cols
	if cols <= 0 {
		cols = 4096
	}
	per := opt.TensorBytes
	if per <= 0 {
		per = 64 << 20
	}
	rowBytes := 2 * cols
	per = per / rowBytes * rowBytes
	if per == 0 || opt.Bytes < 0 {
		return 0, fmt.Errorf("%w: stream of %d bytes in tensors of %d bytes with %d columns",
			ErrDims, opt.Bytes, opt.TensorBytes, cols)
	}
	pool := make([]byte, poolBytes)
	r := rng(opt.Seed ^ 0x5bd1e9955bd1e995)
	newTable("BF16", 0, 0.02).fill(pool, &r)

	sw := tensorstream.NewWriter(w)
	if opt.ChunkSize > 0 {
		sw = tensorstream.NewWriterSize(w, opt.ChunkSize)
	}
	h := &tensorstream.Header{}
	h.AddStage("synth", "", []string{"stream", fmt.Sprint(opt.Bytes)})
	if err := sw.WriteHeader(h); err != nil {
		return 0, err
	}
	var written int64
	for i := int64(0); written < opt.Bytes; i++ {
		size := min(per, (opt.Bytes-written)/rowBytes*rowBytes)
		if size == 0 {
			break // less than a row left
		}
		t := &tensorstream.Tensor{
			Name:     fmt.Sprintf("model.layers.%d.mlp.up_proj.weight", i),
			DType:    tensorstream.BF16,
			Shape:    []int64{size / rowBytes, cols},
			Encoding: tensorstream.Raw,
			Size:     size,
		}
		for k, v := range map[string]any{tensorstream.AnnRole: arch.RoleMLPUp, tensorstream.AnnLayer: i,
			tensorstream.AnnQuantize: true, tensorstream.AnnReason: "synthetic linear weight"} {
			if err := t.SetAnn(k, v); err != nil {
				return written, err
			}
		}
		if err := sw.WriteTensor(t); err != nil {
			return written, err
		}
		// Start each tensor elsewhere in the pool so tensors differ.
		off := (i * 4099 * 8) % poolBytes
		for left := size; left > 0; {
			n := min(left, poolBytes-off)
			if _, err := sw.Write(pool[off : off+n]); err != nil {
				return written, err
			}
			left -= n
			off = 0
		}
		written += size
	}
	return written, sw.Close()
}
