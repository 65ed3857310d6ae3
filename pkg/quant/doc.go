// Package quant is bitsandbytes' 4-bit blockwise quantization (NF4 and FP4, with
// and without double quantization) in pure Go, bit for bit as bitsandbytes'
// CUDA kernels compute it, streamed so that memory does not grow with tensor
// size beyond one float32 absmax per block.
//
// Quantizing a tensor:
//
//	enc, err := quant.NewEncoder(w, quant.BF16, n, quant.DefaultParams(), quant.CPU(threads))
//	io.Copy(enc, payload)     // raw little-endian values, chunks of any length
//	res, err := enc.Close()   // writes absmax (+ nested); res.NestedOffset
//
// The bytes written to w are a stream payload: packed codes | absmax | nested
// absmax (SizesFor gives the section sizes). Decoder and AbsmaxFrom go back.
//
// Where bitsandbytes is not what its source seems to say, the golden vectors
// decide (../shared/testdata/bnb; every packed, absmax, nested and dequantized
// case matches):
//   - the kernels are built with --use_fast_math, so the scale 1/absmax is the
//     GPU's rcp.approx.ftz.f32 (replayed from a measured table, rcp.go) and
//     arithmetic flushes subnormals to zero;
//   - an odd element count packs the code of a zero pad in the last low nibble
//     (7 for NF4);
//   - FP4 code 8 dequantizes to -0 though the checkpoint's quant_map says +0;
//   - the double-quantization offset is torch's float32 absmax.mean() on the
//     GPU, summed in the order of torch's CUDA reduction kernel: MeanF32On
//     replays that order (mean.go) and matches torch 2.11 on an H200 for
//     every count checked (to 70,000, and random counts to 2*10^7), where the
//     exact sum rounded once is one ulp off in many. Past about 4.3 M absmax
//     values the order depends on the GPU's multiprocessors (Params.ReduceGPU).
//
// Non-finite values fail with a *NonFiniteError (ErrNonFinite) naming the
// first bad element unless Params.AllowNonFinite is set.
//
// Backends: the Encoder hands runs of whole blocks to a Backend. CPU(threads)
// splits each run over goroutines. On amd64 CPUs with AVX2 and F16C it uses
// vector kernels (fast_amd64.s, chosen at run time); elsewhere, under the
// purego build tag, and for unusual blocks (NaN, ±Inf, subnormals) it uses
// table-driven Go kernels (fast.go). Both are checked against the literal
// decision tree (ref.go) by fuzzing, by tests at and around every threshold,
// and by an exhaustive run over all float32 codes (NF4PIPE_EXHAUSTIVE=1).
// Dequantization (Decoder) and double quantization have fast paths too. A CUDA
// backend (internal/gpu, cuda build tag) implements the same one-method
// interface, QuantizeBlocks, and must be bit-identical to CPU; double
// quantization always runs in the Encoder on the CPU (it is 1/64 of the data).
package quant
