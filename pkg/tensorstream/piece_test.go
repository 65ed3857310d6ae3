package tensorstream

import (
	"bytes"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readPieces reads a whole stream with ReadPiece into buffers of bufSize,
// verifying every piece, and returns each tensor's payload and trailer facts.
// With mix set it reads the first few bytes of each payload with Read.
func readPieces(data []byte, bufSize int, mix bool) ([]sample, error) {
	r := NewReader(bytes.NewReader(data))
	var out []sample
	for {
		t, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		var payload []byte
		if mix && !t.NoData && t.Size > 3 {
			var head [3]byte
			if _, err := io.ReadFull(r, head[:]); err != nil {
				return out, err
			}
			payload = append(payload, head[:]...)
		}
		buf := make([]byte, bufSize)
		for {
			p, err := r.ReadPiece(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				return out, err
			}
			if err := p.Verify(); err != nil {
				return out, err
			}
			if len(p.Data) == 0 {
				return out, errors.New("empty piece before the payload's end")
			}
			payload = append(payload, p.Data...)
		}
		out = append(out, sample{t, payload})
	}
}

func TestReadPieceSameAsRead(t *testing.T) {
	for _, chunk := range []int{1, 7, 1000, DefaultChunkSize} {
		samples := testTensors(t, rand.New(rand.NewPCG(3, 4)))
		data := writeStream(t, chunk, samples)
		for _, bufSize := range []int{1, 5, 1000, 2500, 1 << 20} {
			for _, mix := range []bool{false, true} {
				got, err := readPieces(data, bufSize, mix)
				require.NoError(t, err, "chunk %d buf %d mix %v", chunk, bufSize, mix)
				require.Len(t, got, len(samples))
				for i, s := range samples {
					assert.True(t, bytes.Equal(s.payload, got[i].payload), "chunk %d buf %d mix %v: %s", chunk, bufSize, mix, s.t.Name)
					assert.Equal(t, s.t.Checksum, got[i].t.Checksum, s.t.Name)
					if s.t.Quant != nil {
						assert.Equal(t, float32(0.0505), got[i].t.Quant.NestedOffset, "trailer read by ReadPiece")
					}
				}
			}
		}
	}
}

// A piece holds whole chunk frames when they fit, so that Verify has them all.
func TestReadPieceWholeChunks(t *testing.T) {
	samples := testTensors(t, rand.New(rand.NewPCG(5, 6)))
	data := writeStream(t, 1000, samples)
	r := NewReader(bytes.NewReader(data))
	_, err := r.Next() // 6600 bytes of BF16 in chunks of 1000
	require.NoError(t, err)
	var sizes []int
	for {
		p, err := r.ReadPiece(make([]byte, 2500))
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		require.NoError(t, p.Verify())
		assert.Len(t, p.chunks, len(p.Data)/1000+min(1, len(p.Data)%1000))
		sizes = append(sizes, len(p.Data))
	}
	assert.Equal(t, []int{2000, 2000, 2000, 600}, sizes)
}

func TestPieceVerifyCatchesCorruption(t *testing.T) {
	samples := testTensors(t, rand.New(rand.NewPCG(9, 10)))
	data := writeStream(t, 1000, samples)
	first := bytes.Index(data, samples[0].payload[:32])
	require.Positive(t, first)
	for _, bufSize := range []int{500, 4000} { // a chunk split (checked on reading) or whole (checked by Verify)
		d := bytes.Clone(data)
		d[first+1500] ^= 0x40
		_, err := readPieces(d, bufSize, false)
		require.ErrorIs(t, err, ErrChecksum, "buf %d", bufSize)
		var se *Error
		require.ErrorAs(t, err, &se)
		assert.Equal(t, "model.embed_tokens.weight", se.Tensor)
		assert.Greater(t, se.Offset, int64(first))
	}
	// A chunk frame whose data and declared CRC were both changed consistently
	// passes Verify; the trailer, checked against the declared CRCs, fails.
	d := bytes.Clone(data)
	d[first+1500] ^= 0x40
	hdr := first + 1000 // frame of the second chunk
	crc := crc32.Checksum(d[hdr+frameHeaderLen:hdr+frameHeaderLen+1000], castagnoli)
	d[hdr+5], d[hdr+6], d[hdr+7], d[hdr+8] = byte(crc), byte(crc>>8), byte(crc>>16), byte(crc>>24)
	_, err := readPieces(d, 4000, false)
	require.ErrorIs(t, err, ErrChecksum)
	assert.Contains(t, err.Error(), "trailer")
}

func TestReadPieceTruncated(t *testing.T) {
	data := writeStream(t, 100, testTensors(t, rand.New(rand.NewPCG(7, 8))))
	for cut := 0; cut < len(data); cut += 1 + cut/50 {
		_, err := readPieces(data[:cut], 250, false)
		require.Error(t, err, "cut at %d", cut)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "cut at %d", cut)
	}
}

func TestCRCShifter(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 3))
	var s crcShifter
	for _, n := range []int64{1, 4 << 20, 4 << 20, 1000, 4 << 20, 3, 1000, 1<<40 + 17} {
		a, b := rng.Uint32(), rng.Uint32()
		assert.Equal(t, crcCombine(a, b, n), s.combine(a, b, n), "length %d", n)
	}
	assert.Equal(t, uint32(5), s.combine(5, 9, 0))
}

// copyWith passes a stream through a writer of chunk size wchunk, tensor by
// tensor with CopyTensor, or with ReadPiece, Verify and CopyPiece into
// buffers of bufSize.
func copyWith(t *testing.T, data []byte, wchunk, bufSize int) []byte {
	r := NewReader(bytes.NewReader(data))
	h, err := r.Header()
	require.NoError(t, err)
	var out bytes.Buffer
	w := NewWriterSize(&out, wchunk)
	require.NoError(t, w.WriteHeader(h))
	for {
		tn, err := r.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if bufSize == 0 {
			require.NoError(t, CopyTensor(w, r, tn))
			continue
		}
		require.NoError(t, w.WriteTensor(tn))
		rechunk := false
		buf := make([]byte, bufSize)
		for {
			p, err := r.ReadPiece(buf)
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
			require.NoError(t, p.Verify())
			rechunk, err = CopyPiece(w, &p, rechunk)
			require.NoError(t, err)
		}
		require.NoError(t, w.EndTensor())
	}
	require.NoError(t, w.Close())
	return out.Bytes()
}

func TestCopyPieceFramesAsCopyTensor(t *testing.T) {
	samples := testTensors(t, rand.New(rand.NewPCG(11, 12)))
	for _, in := range []int{7, 1000, 4096} {
		data := writeStream(t, in, samples)
		for _, wchunk := range []int{5, 1000, 3000, DefaultChunkSize} {
			want := copyWith(t, data, wchunk, 0)
			for _, bufSize := range []int{3, 1000, 2048, 1 << 20} {
				got := copyWith(t, data, wchunk, bufSize)
				if bufSize >= min(in, wchunk) { // every frame CopyTensor forwards fits a buffer
					assert.True(t, bytes.Equal(want, got), "input chunks %d, writer chunks %d, buffer %d", in, wchunk, bufSize)
					continue
				}
				back, err := readPieces(got, 1<<20, false) // frames cut: the same payloads
				require.NoError(t, err)
				for i, s := range samples {
					assert.True(t, bytes.Equal(s.payload, back[i].payload), "input chunks %d, writer chunks %d, buffer %d: %s", in, wchunk, bufSize, s.t.Name)
				}
			}
		}
	}
}
