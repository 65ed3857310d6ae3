// Package verify checks what nf4pipe (or anyone) produced: a tensor stream, a
// bitsandbytes 4-bit checkpoint directory, or both, against the model they
// came from.
//
// For every 4-bit tensor it dequantizes the payload chunk by chunk, compares it
// with the reference tensor read in matching chunks of whole blocks, and
// reports the relative Frobenius error, RMSE, maximum absolute error, SQNR and
// cosine similarity. Two kinds of problems are told apart:
//
//   - integrity: the data is not what it claims to be. Checksums, shapes,
//     dtypes, quantization state (sizes, finite non-negative absmax, code
//     tables), tensors missing or extra against the reference, kept tensors
//     that differ from the reference (or, when their float dtype differs, from
//     the reference cast by quantize.Cast), round-trip differences between a stream
//     and a checkpoint, and 4-bit codes that are not the code book entry
//     nearest to the reference value (the per-element error bound that a
//     correct quantizer guarantees from the block's own absmax).
//   - quality: the data is what it claims to be, but its error lies above the
//     envelope expected for the quant type and block size (docs/verify.md
//     derives it). Such tensors are the ones worth keeping in 16 bits.
//
// Run returns a Report; Report.Err wraps ErrIntegrity or ErrQuality, which the
// command maps to its exit statuses. Memory stays bounded: a checkpoint and
// the reference are read with positioned reads in chunks, and a stream's 4-bit
// payload, whose absmax follows its codes, is spooled (in memory up to a limit,
// else to a temporary file) before it is compared.
package verify
