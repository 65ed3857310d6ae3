package safetensors

import "errors"

// Sentinel errors. Every error this package returns for bad input wraps one of
// them (test with errors.Is) and names the file and, where there is one, the
// tensor.
var (
	// ErrHeader: the 8-byte length or the JSON header is malformed (too small,
	// over 100 MB, not UTF-8, not JSON, wrong structure or field types).
	ErrHeader = errors.New("safetensors: bad header")
	// ErrTruncated: the file ends before its header or its data section does.
	ErrTruncated = errors.New("safetensors: file truncated")
	// ErrDType: a tensor's dtype is not one of the format's.
	ErrDType = errors.New("safetensors: unknown dtype")
	// ErrShape: a negative or overflowing shape, or shape × dtype size that
	// differs from the tensor's byte length.
	ErrShape = errors.New("safetensors: bad shape")
	// ErrOffsets: data regions that are not contiguous from 0 (gaps, overlaps,
	// end before start) or bytes after the last region.
	ErrOffsets = errors.New("safetensors: bad data offsets")
	// ErrDuplicate: a tensor name that appears twice, in one header or across
	// the shards of a checkpoint, or a duplicate key in a JSON object.
	ErrDuplicate = errors.New("safetensors: duplicate tensor")
	// ErrMissingShard: a shard that model.safetensors.index.json names does not exist.
	ErrMissingShard = errors.New("safetensors: missing shard")
	// ErrIndex: model.safetensors.index.json is malformed or disagrees with
	// the shards (a tensor mapped to a shard that lacks it, or the reverse).
	ErrIndex = errors.New("safetensors: bad index")
	// ErrNotFound: no tensor of that name, or no checkpoint at that path.
	ErrNotFound = errors.New("safetensors: not found")
	// ErrSize: a size string (--max-shard-size) that does not parse.
	ErrSize = errors.New("safetensors: bad size")
)
