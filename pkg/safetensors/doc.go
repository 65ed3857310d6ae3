// Package safetensors reads and writes safetensors files and sharded
// Hugging Face checkpoints.
//
// Reading: Open takes a .safetensors file, a model directory or a
// model.safetensors.index.json, validates every header as hostile input
// (the Rust crate's rules and more: see the Err* sentinels), and serves
// payloads through positioned reads, so memory stays bounded for any model.
//
// Writing: Writer, Serialize and WriteFile produce files byte-identical to
// the Python safetensors library's (Rust core) serialize/save_file for the
// same tensors and metadata. The rules, from huggingface/safetensors
// safetensors/src/tensor.rs (prepare, Metadata's Serialize, Dtype):
//
//   - data order: dtype descending in the order the Dtype enum declares its
//     variants (BOOL < F4 < F6_E2M3 < F6_E3M2 < U8 < I8 < F8_E5M2 < F8_E4M3 <
//     F8_E8M0 < F8_E4M3FNUZ < F8_E5M2FNUZ < I16 < U16 < F16 < BF16 < I32 <
//     U32 < F32 < C64 < F64 < I64 < U64), then name ascending byte-wise;
//     offsets contiguous from 0 in that order;
//   - header: compact serde_json, "__metadata__" first when there is
//     metadata, then the tensors in data order, each
//     {"dtype":..,"shape":[..],"data_offsets":[b,e]}; padded with spaces to
//     a multiple of 8 bytes; preceded by its length as a little-endian u64.
//
// Sharding: PlanShards and CheckpointWriter split a state dict the way
// transformers' save_pretrained does through huggingface_hub
// (split_state_dict_into_shards_factory), and Index.Marshal writes
// model.safetensors.index.json as transformers does
// (json.dumps(index, indent=2, sort_keys=True) + "\n").
package safetensors
