// Command synth makes synthetic benchmark inputs: a sharded safetensors
// checkpoint of a real model's dimensions, or a tensor stream on stdout; and
// measures a process's peak RSS (synth rss). See internal/synth.
//
//	go run ./internal/synth/cmd model --preset tinyllama-1.1b out/synth/tinyllama
//	go run ./internal/synth/cmd stream --gib 4 | passthru | ... > /dev/null
//	synth rss -o usage.txt -l quantize -- bin/quantize
package main

import (
	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/synth"
)

func main() { cli.Main(synth.App(), nil) }
