package tensorstream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type sample struct {
	t       *Tensor
	payload []byte
}

func testTensors(tb testing.TB, rng *rand.Rand) []sample {
	mk := func(t *Tensor) sample {
		t.Size = t.ExpectedSize()
		p := make([]byte, t.Size)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if t.NoData {
			p = nil
		}
		return sample{t, p}
	}
	q := &Tensor{Name: "model.layers.0.self_attn.q_proj.weight", DType: BF16, Shape: []int64{64, 96}, Encoding: BNB4,
		Quant: &QuantState{Type: "nf4", BlockSize: 64, DoubleQuant: true, NestedBlockSize: 256}}
	out := []sample{
		mk(&Tensor{Name: "model.embed_tokens.weight", DType: BF16, Shape: []int64{100, 33}, Encoding: Raw}),
		mk(&Tensor{Name: "scalar", DType: F32, Shape: []int64{}, Encoding: Raw}),
		mk(&Tensor{Name: "empty", DType: F16, Shape: []int64{0, 7}, Encoding: Raw}),
		mk(q),
		mk(&Tensor{Name: "virtual", DType: BF16, Shape: []int64{4096, 4096}, Encoding: Raw, NoData: true}),
	}
	require.NoError(tb, out[0].t.SetAnn(AnnRole, "embedding"))
	require.NoError(tb, out[0].t.SetAnn(AnnLayer, -1))
	require.NoError(tb, out[3].t.SetAnn(AnnQuantize, true))
	require.NoError(tb, out[3].t.SetAnn("x-unknown", map[string]any{"a": []int{1, 2}}))
	return out
}

func writeStream(t testing.TB, chunk int, samples []sample) []byte {
	var buf bytes.Buffer
	w := NewWriterSize(&buf, chunk)
	h := &Header{}
	h.AddStage("test", "0", []string{"--x"})
	require.NoError(t, h.Set(SectionModel, map[string]any{"family": "llama", "layers": 2}))
	require.NoError(t, w.WriteHeader(h))
	for _, s := range samples {
		require.NoError(t, w.WriteTensor(s.t))
		if !s.t.NoData {
			// Write in uneven pieces to cross chunk boundaries.
			p := s.payload
			for len(p) > 0 {
				k := min(len(p), 1+len(p)/3)
				_, err := w.Write(p[:k])
				require.NoError(t, err)
				p = p[k:]
			}
		}
		if s.t.Quant != nil {
			s.t.Quant.NestedOffset = 0.0505
		}
	}
	require.NoError(t, w.Close())
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	for _, chunk := range []int{1, 7, 1000, DefaultChunkSize} {
		samples := testTensors(t, rand.New(rand.NewPCG(1, 2)))
		data := writeStream(t, chunk, samples)

		r := NewReader(bytes.NewReader(data))
		h, err := r.Header()
		require.NoError(t, err)
		assert.Equal(t, MajorVersion, h.Major)
		assert.Equal(t, []Stage{{Name: "test", Version: "0", Args: []string{"--x"}}}, h.Stages)
		var model struct {
			Family string `msgpack:"family"`
			Layers int    `msgpack:"layers"`
		}
		ok, err := h.Get(SectionModel, &model)
		require.True(t, ok)
		require.NoError(t, err)
		assert.Equal(t, "llama", model.Family)

		for i, s := range samples {
			got, err := r.Next()
			require.NoError(t, err, "tensor %d", i)
			assert.Equal(t, s.t.Name, got.Name)
			assert.Equal(t, s.t.Shape, got.Shape)
			assert.Equal(t, s.t.Annotations, got.Annotations)
			payload, err := io.ReadAll(r)
			require.NoError(t, err)
			if s.t.NoData {
				assert.Empty(t, payload)
				assert.True(t, got.NoData)
			} else {
				assert.Equal(t, s.payload, payload)
			}
			assert.Equal(t, crc32.Checksum(s.payload, castagnoli), got.Checksum)
			if s.t.Quant != nil {
				assert.Equal(t, float32(0.0505), got.Quant.NestedOffset)
			}
		}
		_, err = r.Next()
		assert.Equal(t, io.EOF, err)
		assert.Equal(t, int64(len(samples)), r.End().Tensors)
		_, err = r.Next()
		assert.Equal(t, io.EOF, err, "EOF is sticky")
	}
}

func TestAnnotations(t *testing.T) {
	var tt Tensor
	require.NoError(t, tt.SetAnn(AnnLayer, 7))
	require.NoError(t, tt.SetAnn(AnnQuantize, true))
	require.NoError(t, tt.SetAnn(AnnRole, "attn_q"))
	n, ok := tt.AnnInt(AnnLayer)
	assert.True(t, ok)
	assert.Equal(t, int64(7), n)
	assert.True(t, tt.AnnBool(AnnQuantize))
	assert.Equal(t, "attn_q", tt.AnnString(AnnRole))
	assert.Equal(t, "", tt.AnnString("absent"))
	_, ok = tt.AnnInt(AnnRole)
	assert.False(t, ok, "a string is not an int")
}

func TestSkipUnreadPayload(t *testing.T) {
	samples := testTensors(t, rand.New(rand.NewPCG(3, 4)))
	data := writeStream(t, 100, samples)
	r := NewReader(bytes.NewReader(data))
	n := 0
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		n++
	}
	assert.Equal(t, len(samples), n)
}

// PassThrough copies every tensor of a stream to a new one, as a stage that
// understands nothing does; the output must equal the input byte for byte.
func TestPassThroughIsIdentity(t *testing.T) {
	data := writeStream(t, 1000, testTensors(t, rand.New(rand.NewPCG(5, 6))))
	var out bytes.Buffer
	require.NoError(t, passThrough(&out, bytes.NewReader(data), 1000))
	assert.Equal(t, data, out.Bytes())
}

func passThrough(dst io.Writer, src io.Reader, chunk int) error {
	r := NewReader(src)
	h, err := r.Header()
	if err != nil {
		return err
	}
	w := NewWriterSize(dst, chunk)
	if err := w.WriteHeader(h); err != nil {
		return err
	}
	for {
		t, err := r.Next()
		if err == io.EOF {
			return w.Close()
		}
		if err != nil {
			return err
		}
		if err := CopyTensor(w, r, t); err != nil {
			return err
		}
	}
}

func readAll(data []byte) error {
	r := NewReader(bytes.NewReader(data))
	if _, err := r.Header(); err != nil {
		return err
	}
	for {
		_, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
	}
}

func TestTruncatedIsUnexpectedEOF(t *testing.T) {
	data := writeStream(t, 100, testTensors(t, rand.New(rand.NewPCG(7, 8))))
	require.NoError(t, readAll(data))
	for cut := 0; cut < len(data); cut += 1 + cut/50 {
		err := readAll(data[:cut])
		require.Error(t, err, "cut at %d", cut)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "cut at %d", cut)
		var se *Error
		assert.ErrorAs(t, err, &se)
	}
}

func TestCorruption(t *testing.T) {
	samples := testTensors(t, rand.New(rand.NewPCG(9, 10)))
	data := writeStream(t, 1000, samples)

	flip := func(at int) []byte {
		d := bytes.Clone(data)
		d[at] ^= 0x40
		return d
	}
	// A byte in the middle of the first payload: a chunk checksum fails.
	first := bytes.Index(data, samples[0].payload[:32])
	require.Positive(t, first)
	err := readAll(flip(first + 100))
	assert.ErrorIs(t, err, ErrChecksum)
	var se *Error
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "model.embed_tokens.weight", se.Tensor)
	assert.Greater(t, se.Offset, int64(0))

	// The header record's body: its frame checksum fails.
	assert.ErrorIs(t, readAll(flip(magicLen+frameHeaderLen+2)), ErrChecksum)

	// Bad magic, and garbage.
	assert.ErrorIs(t, readAll(flip(0)), ErrCorrupt)
	assert.ErrorIs(t, readAll([]byte("this is not a stream at all")), ErrCorrupt)
	assert.ErrorIs(t, readAll(nil), io.ErrUnexpectedEOF)

	// A newer major version.
	newer := bytes.Clone(data)
	newer[4] = MajorVersion + 1
	assert.ErrorIs(t, readAll(newer), ErrVersion)

	// A frame kind that does not belong.
	bad := bytes.Clone(data)
	bad[magicLen] = 'Q'
	assert.ErrorIs(t, readAll(bad), ErrCorrupt)

	// A record length over the limit is refused before allocating.
	huge := bytes.Clone(data)
	binary.LittleEndian.PutUint32(huge[magicLen+1:], 0xffffffff)
	assert.ErrorIs(t, readAll(huge), ErrLimit)
}

func TestEndRecordCounts(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.WriteHeader(&Header{}))
	// Write an end record by hand that claims one tensor too many.
	require.NoError(t, w.writeRecord(frameEnd, "", &End{Tensors: 1}))
	require.NoError(t, w.Flush())
	assert.ErrorIs(t, readAll(buf.Bytes()), ErrCorrupt)
}

func TestWriterChecksSizes(t *testing.T) {
	tt := &Tensor{Name: "w", DType: F32, Shape: []int64{4}, Encoding: Raw, Size: 16}
	w := NewWriter(io.Discard)
	require.NoError(t, w.WriteHeader(&Header{}))
	require.NoError(t, w.WriteTensor(tt))
	_, err := w.Write(make([]byte, 8))
	require.NoError(t, err)
	assert.ErrorIs(t, w.Close(), ErrSize, "8 of 16 bytes")

	w = NewWriter(io.Discard)
	require.NoError(t, w.WriteHeader(&Header{}))
	require.NoError(t, w.WriteTensor(tt))
	_, err = w.Write(make([]byte, 17))
	assert.ErrorIs(t, err, ErrSize)

	w = NewWriter(io.Discard)
	require.NoError(t, w.WriteHeader(&Header{}))
	bad := &Tensor{Name: "w", DType: F32, Shape: []int64{4}, Encoding: Raw, Size: 15}
	assert.ErrorIs(t, w.WriteTensor(bad), ErrCorrupt)

	w = NewWriter(io.Discard)
	assert.ErrorIs(t, w.WriteTensor(tt), ErrState, "tensor before header")
}

func TestHostileMsgpackLengths(t *testing.T) {
	// An array claiming 2^32-1 elements in a 6-byte record must not be allocated.
	body := []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0x00}
	assert.Error(t, checkLengths(body))
	var v []int64
	assert.Error(t, unmarshal(body, &v))
	// Deep nesting is refused rather than recursed into.
	deep := bytes.Repeat([]byte{0x91}, 1000)
	assert.Error(t, checkLengths(append(deep, 0x00)))
	// Well-formed values pass.
	ok, err := marshal(map[string]any{"a": []any{1, "x", 2.5, nil, true}, "b": []byte{1, 2}})
	require.NoError(t, err)
	assert.NoError(t, checkLengths(ok))
}

func TestQuantSections(t *testing.T) {
	q := &QuantState{Type: "nf4", BlockSize: 64, DoubleQuant: true, NestedBlockSize: 256}
	// 128x256 weight of the tiny llama: 16384 packed bytes, 512 absmax codes, 2 nested floats.
	p, a, n := q.Sections(128 * 256)
	assert.Equal(t, [3]int64{16384, 512, 8}, [3]int64{p, a, n})
	q.DoubleQuant = false
	p, a, n = q.Sections(3*100 + 1)
	assert.Equal(t, [3]int64{151, 5 * 4, 0}, [3]int64{p, a, n})
}

func TestErrorMessage(t *testing.T) {
	err := &Error{Tensor: "x", Offset: 42, Err: ErrChecksum}
	assert.Equal(t, `tensor "x" at byte 42: tensorstream: checksum mismatch`, err.Error())
	assert.True(t, errors.Is(err, ErrChecksum))
}
