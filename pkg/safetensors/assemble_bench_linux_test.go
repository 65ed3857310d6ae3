package safetensors

import (
	"fmt"
	"github.com/stretchr/testify/require"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkAssemblyCopy measures ways to copy spooled entries into their
// places in the final file, the work Close does after the last tensor: a
// 256 MiB spool of entries sized like a 4-bit llama's (131 MB embedding,
// 5.8/2/0.26 MB packed weights, small absmax and JSON entries), copied in a
// shuffled order. copy_file_range is what Close did before preallocating;
// prealloc is what it does now (the file fallocated, and on a disk file
// system read into the cache, before the timer starts); mmap-N splits the
// destination into 4 MiB windows that N goroutines map and pread into, the
// way to copy in parallel (writes to one file take its inode lock, maps do
// not). The spool goes to $NF4PIPE_BENCH_DIR when set (a tmpfs, say), else
// to the test's temporary directory.
func BenchmarkAssemblyCopy(b *testing.B) {
	dir := os.Getenv("NF4PIPE_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	dir, err := os.MkdirTemp(dir, "nf4pipe-bench-")
	require.NoError(b, err)
	defer os.RemoveAll(dir)
	const size = 256 << 20
	spool, err := os.Create(filepath.Join(dir, "spool"))
	require.NoError(b, err)
	defer spool.Close()
	buf := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{3}).Read(buf)
	for off := 0; off < size; off += len(buf) {
		if _, err := spool.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	type piece struct{ src, dst, n int64 }
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int64{5767168, 5767168, 5767168, 2097152, 2097152, 262144, 262144, 90112, 90112, 32768, 4096, 1024, 64, 800}
	var entries []piece
	for off := int64(0); off < size; {
		n := sizes[rng.IntN(len(sizes))]
		if off == 0 {
			n = 131072000
		}
		n = min(n, size-off)
		entries = append(entries, piece{src: off, n: n})
		off += n
	}
	dst := int64(4000) // a header's worth
	for _, i := range rng.Perm(len(entries)) {
		entries[i].dst = dst
		dst += entries[i].n
	}
	total := dst
	fresh := func(b *testing.B, prealloc bool) *os.File {
		b.StopTimer()
		defer b.StartTimer()
		p := filepath.Join(dir, "out")
		os.Remove(p)
		f, err := os.Create(p)
		require.NoError(b, err)
		if prealloc {
			pa := newPreallocator(f)
			pa.grow(total)
			if pa.complete() == 0 {
				b.Skip("no fallocate here")
			}
			if err := f.Truncate(total); err != nil { // the last partial step
				b.Fatal(err)
			}
		}
		return f
	}
	b.Run("copy_file_range", func(b *testing.B) {
		for _, prealloc := range []bool{false, true} {
			b.Run(fmt.Sprintf("prealloc=%v", prealloc), func(b *testing.B) {
				b.SetBytes(total)
				for b.Loop() {
					f := fresh(b, prealloc)
					for _, e := range entries {
						so, do := e.src, e.dst
						for left := e.n; left > 0; {
							n, err := unix.CopyFileRange(int(spool.Fd()), &so, int(f.Fd()), &do, int(left), 0)
							if err != nil || n == 0 {
								b.Fatal(err, n)
							}
							left -= int64(n)
						}
					}
					f.Close()
				}
			})
		}
	})
	for _, workers := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("mmap-%d/prealloc=true", workers), func(b *testing.B) {
			const window = 4 << 20
			type job struct {
				lo, hi int64
				ps     []piece
			}
			var jobs []job // the entries cut at window boundaries, by destination
			for _, e := range entries {
				for o := int64(0); o < e.n; {
					w := (e.dst + o) / window
					n := min(e.n-o, (w+1)*window-(e.dst+o))
					for int64(len(jobs)) <= w {
						jobs = append(jobs, job{lo: int64(len(jobs)) * window, hi: min(total, int64(len(jobs)+1)*window)})
					}
					jobs[w].ps = append(jobs[w].ps, piece{e.src + o, e.dst + o, n})
					o += n
				}
			}
			b.SetBytes(total)
			for b.Loop() {
				f := fresh(b, true)
				ch := make(chan job)
				var wg sync.WaitGroup
				var mu sync.Mutex
				var first error
				for range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for j := range ch {
							m, err := unix.Mmap(int(f.Fd()), j.lo, int(j.hi-j.lo), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
							for _, p := range j.ps {
								if err == nil {
									_, err = spool.ReadAt(m[p.dst-j.lo:p.dst-j.lo+p.n], p.src)
								}
							}
							if m != nil {
								unix.Munmap(m)
							}
							if err != nil && err != io.EOF {
								mu.Lock()
								first = err
								mu.Unlock()
							}
						}
					}()
				}
				for _, j := range jobs {
					ch <- j
				}
				close(ch)
				wg.Wait()
				if first != nil {
					b.Fatal(first)
				}
				f.Close()
			}
		})
	}
}
