// Package quantize is the quantize stage of the nf4pipe pipeline as a library:
// it reads a tensor stream, turns each tensor marked for quantization into
// bitsandbytes 4-bit (NF4 or FP4, with or without double quantization) through
// pkg/quant, passes every other tensor through unchanged (or cast with
// Options.Cast), and writes a stream whose quantized descriptors carry their
// full quantization state.
//
//	sum, err := quantize.Run(os.Stdin, os.Stdout, quantize.Options{Params: quant.DefaultParams()})
//
// Which tensors are quantized: those whose "quantize" annotation (set by
// detect) is true, overridden by Options.Skip (globs that keep a tensor) and
// Options.Only (globs that quantize exactly the floating tensors of two or more
// dimensions they match). A tensor already encoded as bnb4 passes through.
//
// Memory stays bounded whatever the tensor size: payloads are read in chunks
// and fed to a quant.Encoder that writes straight into the output stream; the
// encoder keeps only the float32 absmax of the tensor (one per block) for the
// double-quantization offset, which goes into the tensor's trailer.
//
// Work runs on the CPU (all cores by default) or, in builds with the cuda tag,
// on NVIDIA GPUs through internal/gpu, tensors taken round-robin by the listed
// devices; both give the same bytes. A GPU is opened in the background: the
// CPU quantizes until it is ready (its start-up outlasts a small model), then
// Device "cuda" hands it the work and "auto" shares each run of blocks with it
// in proportion to their measured throughput, as long as sharing measures
// faster than the CPU alone (hybrid.go). The default build is pure Go: auto is
// the CPU and a CUDA device is answered with ErrNoCUDA.
//
// Errors wrap the sentinels below (ErrUsage, ErrUnsupported, ErrNoData,
// ErrNoCUDA, ErrWrite), quant.ErrNonFinite for NaN/±Inf weights, and
// pkg/tensorstream's for a corrupt or truncated input (io.ErrUnexpectedEOF);
// cmd/quantize maps them to the shared exit statuses of internal/cli.
package quantize
