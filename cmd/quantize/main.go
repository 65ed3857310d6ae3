// Command quantize turns the tensors of a stream that detect marked for
// quantization into bitsandbytes 4-bit (NF4 or FP4, double quantization) and
// passes the others through; see pkg/quantize.
package main

import "github.com/nf4pipe/nf4pipe/internal/cli"

func main() { cli.Main(newApp(), exitTable) }
