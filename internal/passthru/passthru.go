// Package passthru is the trivial pipeline stage: it reads a tensor stream and
// writes it out unchanged (plus its own stage record in the header). The
// pipe-chain benchmark strings several together to measure what the stream
// format itself costs a stage in throughput and memory.
package passthru

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// ErrNoHWM: /proc/self/status has no VmHWM line (not Linux, or no procfs).
var ErrNoHWM = errors.New("passthru: VmHWM not available")

// Stats count what a pass-through copied.
type Stats struct {
	Tensors int64
	Bytes   int64 // payload bytes
}

// Copy reads the stream from src and writes it to dst, tensor by tensor,
// holding no more than the reader's buffer and one writer chunk (chunkSize,
// 0 for the writer's default).
func Copy(dst io.Writer, src io.Reader, chunkSize int) (Stats, error) {
	var st Stats
	r := tensorstream.NewReader(src)
	h, err := r.Header()
	if err != nil {
		return st, err
	}
	h.AddStage("passthru", "", nil)
	w := tensorstream.NewWriter(dst)
	if chunkSize > 0 {
		w = tensorstream.NewWriterSize(dst, chunkSize)
	}
	if err := w.WriteHeader(h); err != nil {
		return st, err
	}
	for {
		t, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, err
		}
		if err := tensorstream.CopyTensor(w, r, t); err != nil {
			return st, err
		}
		st.Tensors++
		if !t.NoData {
			st.Bytes += t.Size
		}
	}
	return st, w.Close()
}

// PeakRSS returns this process's peak resident set size in bytes, from the
// VmHWM line of /proc/self/status.
func PeakRSS() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNoHWM, err)
	}
	defer f.Close()
	return parseHWM(f)
}

func parseHWM(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("VmHWM:")) {
			continue
		}
		fields := bytes.Fields(line[len("VmHWM:"):])
		if len(fields) != 2 || string(fields[1]) != "kB" {
			return 0, fmt.Errorf("%w: malformed line %q", ErrNoHWM, line)
		}
		kb, err := strconv.ParseInt(string(fields[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: malformed line %q", ErrNoHWM, line)
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNoHWM, err)
	}
	return 0, ErrNoHWM
}
