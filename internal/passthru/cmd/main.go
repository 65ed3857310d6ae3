// Command passthru copies a tensor stream from stdin to stdout unchanged: the
// stage of the pipe-chain benchmark (scripts/bench-chain.sh). With --rss, or
// NF4PIPE_RSS=1 in the environment, it prints its peak RSS (VmHWM) and
// throughput to stderr at exit.
//
//	synth stream --gib 4 | passthru --rss | passthru --rss > /dev/null
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/passthru"
)

func main() {
	rss := flag.Bool("rss", os.Getenv("NF4PIPE_RSS") == "1", "print peak RSS and throughput to stderr at exit")
	label := flag.String("label", "passthru", "name on the --rss line")
	chunk := flag.Int("chunk", 0, "output chunk size in bytes (default: the stream writer's)")
	pipe := flag.Int("pipe-size", cli.PipeSize, "grow stdin and stdout pipe buffers to this many bytes, as the tools do (0: leave the kernel's 64 KiB)")
	flag.Parse()
	if *pipe > 0 {
		cli.GrowPipe(os.Stdin, *pipe)
		cli.GrowPipe(os.Stdout, *pipe)
	}

	start := time.Now()
	st, err := passthru.Copy(os.Stdout, os.Stdin, *chunk)
	if errors.Is(err, syscall.EPIPE) {
		os.Exit(0) // the next stage is gone: its own status tells why
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "passthru: %v\n", err)
		os.Exit(1)
	}
	if *rss {
		el := time.Since(start).Seconds()
		hwm, herr := passthru.PeakRSS()
		if herr != nil {
			fmt.Fprintf(os.Stderr, "passthru: %v\n", herr)
		}
		fmt.Fprintf(os.Stderr, "%s peak_rss_mib=%.1f tensors=%d bytes=%d wall_s=%.3f gb_s=%.3f\n",
			*label, float64(hwm)/(1<<20), st.Tensors, st.Bytes, el, float64(st.Bytes)/1e9/el)
	}
}
