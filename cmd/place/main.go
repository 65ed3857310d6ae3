// Command place writes a quantized tensor stream as a Hugging Face checkpoint in
// the bitsandbytes 4-bit layout, or uploads it to the planned GPUs, passing the
// stream on to the next stage.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/pkg/place"
)

func main() {
	// A closed pipe downstream becomes an EPIPE error that place handles (it
	// stops emitting and finishes the checkpoint) instead of killing it.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := place.Main(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr, cli.IsTerminal(os.Stdout))
	stop()
	os.Exit(code)
}
