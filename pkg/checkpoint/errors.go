package checkpoint

import "errors"

// Sentinel errors. Every error the package returns for bad input wraps one of
// them and names the file or tensor concerned; errors from pkg/safetensors and
// pkg/tensorstream pass through wrapped, so errors.Is finds theirs too.
var (
	// ErrQuantState: a quant_state JSON object that is malformed or disagrees
	// with the tensors it describes, or a stream tensor whose quant state the
	// layout cannot express.
	ErrQuantState = errors.New("checkpoint: bad quant state")
	// ErrLayout: state-dict entries that do not form the bitsandbytes 4-bit
	// layout: a component without its weight or quant state, a missing
	// component, a wrong dtype or shape, a non-standard code book.
	ErrLayout = errors.New("checkpoint: bad 4-bit layout")
	// ErrConfig: a config.json that is not a JSON object, or a
	// quantization_config that is not bitsandbytes 4-bit.
	ErrConfig = errors.New("checkpoint: bad config.json")
	// ErrDType: a tensor dtype that bitsandbytes does not quantize.
	ErrDType = errors.New("checkpoint: unsupported dtype")
)
