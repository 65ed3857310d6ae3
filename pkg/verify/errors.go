package verify

import (
	"errors"
	"fmt"
)

// Sentinel errors. Report.Err wraps the first that applies; tests use errors.Is.
var (
	// ErrIntegrity: the input is not what it claims to be (see Finding kinds).
	ErrIntegrity = errors.New("verify: integrity failure")
	// ErrQuality: every check passed, but some tensors lie outside the error
	// envelope of their quant type and block size.
	ErrQuality = errors.New("verify: quality outside the expected envelope")
	// ErrInput: verify cannot do its job with what it was given (no input,
	// an unreadable reference or checkpoint).
	ErrInput = errors.New("verify: bad input")
)

// Kinds of integrity findings.
const (
	KindChecksum   = "checksum"    // a stream payload or record failed its CRC-32C
	KindStream     = "stream"      // the stream could not be read to its end record
	KindShape      = "shape"       // shape differs from the reference
	KindDType      = "dtype"       // dtype differs from the reference
	KindQuantState = "quant_state" // sizes, strings or tables of the quantization state
	KindAbsmax     = "absmax"      // non-finite or negative absmax, nested absmax or offset
	KindCodes      = "codes"       // 4-bit codes that are not the nearest to the reference
	KindMissing    = "missing"     // a reference tensor the input lacks
	KindExtra      = "extra"       // an input tensor the reference lacks
	KindKeptBytes  = "kept_bytes"  // a kept (raw) tensor that differs from the reference
	KindRoundTrip  = "round_trip"  // checkpoint and stream disagree
	KindDuplicate  = "duplicate"   // a tensor name seen twice in the input
)

// Finding is one integrity problem.
type Finding struct {
	Tensor string `json:"tensor,omitempty"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

func (f Finding) String() string {
	if f.Tensor == "" {
		return fmt.Sprintf("%s: %s", f.Kind, f.Detail)
	}
	return fmt.Sprintf("%s: tensor %q: %s", f.Kind, f.Tensor, f.Detail)
}
