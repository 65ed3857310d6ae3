package quantize

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// benchStream is 8 BF16 matrices of 2048x2048 marked for quantization and
// two 1-D tensors to keep: 64 MiB of payload.
func benchStream(b *testing.B, quantize bool) []byte {
	specs := []spec{{name: "norm", dt: tensorstream.BF16, shape: []int64{2048}}}
	for i := range 8 {
		specs = append(specs, spec{name: fmt.Sprintf("layers.%d.w", i), dt: tensorstream.BF16, shape: []int64{2048, 2048}, quantize: quantize})
	}
	return makeStream(b, append(specs, spec{name: "final", dt: tensorstream.BF16, shape: []int64{2048}})...)
}

// BenchmarkStage is the quantize stage over an in-memory stream, NF4 with
// double quantization; MB/s counts input stream bytes.
func BenchmarkStage(b *testing.B) {
	in := benchStream(b, true)
	for _, threads := range []int{1, 0} {
		b.Run(fmt.Sprintf("nf4-dq/threads=%d", threads), func(b *testing.B) {
			o := cpuOptions()
			o.Threads = threads
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Run(bytes.NewReader(in), io.Discard, o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// The same stream with nothing marked: the pass-through floor of the stage.
	keep := benchStream(b, false)
	b.Run("pass-through", func(b *testing.B) {
		b.SetBytes(int64(len(keep)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Run(bytes.NewReader(keep), io.Discard, cpuOptions()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cast-f16", func(b *testing.B) {
		o := cpuOptions()
		o.Cast = tensorstream.F16
		b.SetBytes(int64(len(keep)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Run(bytes.NewReader(keep), io.Discard, o); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStageFile is the stage over a whole stream in a file, as detect
// writes it (make one with `bin/detect -q MODEL > FILE`), to io.Discard:
//
//	NF4PIPE_STREAM=/tmp/tl.stream go test -run '^$' -bench StageFile -benchtime 5x ./pkg/quantize
//
// MB/s counts input stream bytes; the file should be in the page cache.
// read-stall-ms is the time the reading waited for a free buffer (the work
// was behind it), work-stall-ms the time the work waited for input (the
// reading or checksumming was behind); bufs=N sets the input buffers.
func BenchmarkStageFile(b *testing.B) {
	name, st := streamFile(b)
	for _, bufs := range []int{0, 8} {
		b.Run(fmt.Sprintf("bufs=%d", bufs), func(b *testing.B) {
			testInBufs = bufs
			var readStall, workStall time.Duration
			testPipelineDone = func(p *pipeline) { readStall += p.readStall; workStall += p.workStall }
			defer func() { testInBufs, testPipelineDone = 0, nil }()
			b.SetBytes(st.Size())
			b.ReportAllocs()
			for b.Loop() {
				f, err := os.Open(name)
				if err != nil {
					b.Fatal(err)
				}
				_, err = Run(f, io.Discard, cpuOptions())
				f.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(readStall.Milliseconds())/float64(b.N), "read-stall-ms/op")
			b.ReportMetric(float64(workStall.Milliseconds())/float64(b.N), "work-stall-ms/op")
		})
	}
}

// BenchmarkStagePipe is BenchmarkStageFile with the stream coming through a
// pipe of cli.PipeSize, written by a goroutine that copies the file into it
// (feed: splice on Linux, page-cache pages passed by reference, as detect does),
// so that the stage reads as it does in `detect | quantize`:
//
//	NF4PIPE_STREAM=/tmp/tl.stream go test -run '^$' -bench StagePipe -benchtime 5x ./pkg/quantize
//
// The sub-benchmarks check the input on reading (checkOnRead, the choice
// below 4 cores) or on verifying goroutines (from 4 cores up); cpu-ms/op
// is the CPU time of the whole test process (the feeder included).
func BenchmarkStagePipe(b *testing.B) {
	name := os.Getenv("NF4PIPE_STREAM")
	if name == "" {
		b.Skip("NF4PIPE_STREAM names no stream file")
	}
	st, err := os.Stat(name)
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"check-on-read", "verify-apart"} {
		b.Run(mode, func(b *testing.B) {
			on := mode == "check-on-read"
			testCheckOnRead = &on
			defer func() { testCheckOnRead = nil }()
			b.SetBytes(st.Size())
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				f, err := os.Open(name)
				if err != nil {
					b.Fatal(err)
				}
				pr, pw, err := os.Pipe()
				if err != nil {
					b.Fatal(err)
				}
				cli.GrowPipe(pw, cli.PipeSize)
				copied := make(chan error, 1)
				go func() {
					err := feed(pw, f)
					pw.Close()
					copied <- err
				}()
				_, err = Run(pr, io.Discard, cpuOptions())
				pr.Close()
				f.Close()
				if cerr := <-copied; err == nil {
					err = cerr
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			// On a shared machine the CPU time (the feeder's included) says
			// more than the wall time.
			b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}

// streamFile is the stream file $NF4PIPE_STREAM names, for the benchmarks
// that run the stage on a real model; they skip without one.
func streamFile(b *testing.B) (string, os.FileInfo) {
	name := os.Getenv("NF4PIPE_STREAM")
	if name == "" {
		b.Skip("NF4PIPE_STREAM names no stream file")
	}
	st, err := os.Stat(name)
	if err != nil {
		b.Fatal(err)
	}
	return name, st
}
