package gpu

import (
	"strings"
	"sync"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
)

// minSpreadBlocks keeps runs too small to be worth splitting on one backend.
const minSpreadBlocks = 1 << 14

// Spread returns a backend that splits each run of blocks into equal parts,
// one per backend (e.g. one per GPU: --device cuda:0,cuda:1), quantized
// concurrently. Small runs go to the backends in turn. The result is the same
// as any one backend's: blocks are independent.
func Spread(backends ...quant.Backend) quant.Backend {
	if len(backends) == 1 {
		return backends[0]
	}
	return &spread{bs: backends}
}

type spread struct {
	bs   []quant.Backend
	mu   sync.Mutex
	next int
	busy []sync.Mutex
}

func (s *spread) Name() string {
	names := make([]string, len(s.bs))
	for i, b := range s.bs {
		names[i] = b.Name()
	}
	return strings.Join(names, ",")
}

func (s *spread) QuantizeBlocks(packed []byte, absmax []float32, src []byte, dt quant.DType, p quant.Params, first int64) error {
	es := dt.Size()
	if es == 0 || p.BlockSize <= 0 {
		return s.bs[0].QuantizeBlocks(packed, absmax, src, dt, p, first)
	}
	n := len(src) / es
	blocks := (n + p.BlockSize - 1) / p.BlockSize
	s.mu.Lock()
	if s.busy == nil {
		s.busy = make([]sync.Mutex, len(s.bs))
	}
	start := s.next
	s.next = (s.next + 1) % len(s.bs)
	s.mu.Unlock()
	if blocks < minSpreadBlocks*len(s.bs) {
		b := start
		s.busy[b].Lock()
		defer s.busy[b].Unlock()
		return s.bs[b].QuantizeBlocks(packed, absmax, src, dt, p, first)
	}
	per := (blocks + len(s.bs) - 1) / len(s.bs)
	errs := make([]error, len(s.bs))
	var wg sync.WaitGroup
	for i := range s.bs {
		b0, b1 := i*per, min((i+1)*per, blocks)
		if b0 >= b1 {
			break
		}
		e0, e1 := b0*p.BlockSize, min(b1*p.BlockSize, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.busy[i].Lock()
			defer s.busy[i].Unlock()
			errs[i] = s.bs[i].QuantizeBlocks(packed[e0/2:(e1+1)/2], absmax[b0:b1], src[e0*es:e1*es], dt, p, first+int64(e0))
		}()
	}
	wg.Wait()
	for _, err := range errs { // the earliest part's error names the first bad index
		if err != nil {
			return err
		}
	}
	return nil
}
