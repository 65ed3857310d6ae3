// Command detect identifies a Hugging Face model's architecture and writes its
// tensors, annotated with roles and quantization decisions, as a tensor stream.
package main

import (
	"os"

	"github.com/nf4pipe/nf4pipe/pkg/detect"
)

func main() {
	os.Exit(detect.Main(os.Args, os.Stdout, os.Stderr, isTerminal(os.Stdout)))
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
