package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"testing"
)

// The exhaustive checks take minutes, so they run only when asked:
//
//	NF4PIPE_EXHAUSTIVE=1 go test -run Exhaustive -timeout 1h ./pkg/quant
func exhaustive(t *testing.T) {
	if os.Getenv("NF4PIPE_EXHAUSTIVE") == "" {
		t.Skip("set NF4PIPE_EXHAUSTIVE=1 to run (minutes)")
	}
}

// forAllBits calls fn for every 32-bit pattern, spread over all cores, in
// chunks of 2^16 that start on a multiple of 2^16.
func forAllBits(t *testing.T, fn func(first uint32) error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	next := make(chan uint32, 64)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range next {
				if err := fn(h << 16); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for h := range uint32(1 << 16) {
		next <- h
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
}

type mismatch struct {
	what string
	bits uint32
	got  int
	want int
}

func (m mismatch) Error() string {
	return fmt.Sprintf("%s: %08x: got %d, want %d", m.what, m.bits, m.got, m.want)
}

// TestExhaustiveNestedTable compares the double-quantization code table with
// the reference search on all 2^32 float32 values.
func TestExhaustiveNestedTable(t *testing.T) {
	exhaustive(t)
	tab := nestedTable()
	if tab == nil {
		t.Fatal("no table")
	}
	forAllBits(t, func(first uint32) error {
		for b := first; ; b++ {
			got, want := tab.code(b), nestedCode(&NestedMap, math.Float32frombits(b))
			if got != want {
				return mismatch{"nested", b, int(got), int(want)}
			}
			if b&0xFFFF == 0xFFFF {
				return nil
			}
		}
	})
}

// TestExhaustiveKernelCodes runs every float32 of magnitude at most 1 through
// the F32 kernels in blocks whose absmax is 1 (scale exactly 1, so y = x) and
// compares with the decision trees.
func TestExhaustiveKernelCodes(t *testing.T) {
	exhaustive(t)
	if gpuRecip(1) != 1 {
		t.Fatal("scale of absmax 1 is not 1")
	}
	for _, typ := range []Type{NF4, FP4} {
		code := typ.codeFunc()
		p := Params{Type: typ, BlockSize: 4096, AllowNonFinite: true}
		forAllBits(t, func(first uint32) error {
			if first&0x7FFFFFFF > 0x3F800000 { // |x| > 1
				return nil
			}
			const n = 1 << 16
			src := make([]byte, 4*n)
			for i := range n {
				b := first + uint32(i)
				if b&0x7FFFFFFF > 0x3F800000 || i%4096 == 0 {
					b = 0x3F800000 // keep the absmax at 1
				}
				binary.LittleEndian.PutUint32(src[4*i:], b)
			}
			packed := make([]byte, n/2)
			absmax := make([]float32, n/4096)
			if err := quantizeBlocksCPU(packed, absmax, src, F32, p, 0); err != nil {
				return err
			}
			for i := range n {
				x := math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
				want := code(mulFTZ(x, 1))
				got := packed[i/2] >> 4
				if i&1 == 1 {
					got = packed[i/2] & 15
				}
				if got != want {
					return mismatch{string(typ), math.Float32bits(x), int(got), int(want)}
				}
			}
			return nil
		})
	}
}
