// Command detect identifies a Hugging Face model's architecture and writes its
// tensors, annotated with roles and quantization decisions, as a tensor stream.
package main

import (
	"os"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/pkg/detect"
)

func main() {
	os.Exit(detect.Main(os.Args, os.Stdout, os.Stderr, cli.IsTerminal(os.Stdout)))
}
