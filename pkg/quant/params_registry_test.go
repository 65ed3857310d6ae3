package quant

import (
	"errors"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/qtype"
)

// TestEveryRegisteredTypeHasAnEncoder ties the registry to this package's
// encoders: a type added to pkg/qtype without its decision tree and kernels
// here (docs/ARCHITECTURE.md) fails, and so does an encoder for a type the
// other stages would refuse.
func TestEveryRegisteredTypeHasAnEncoder(t *testing.T) {
	encoders := map[Type]bool{NF4: true, FP4: true}
	for _, info := range qtype.Types() {
		if !encoders[Type(info.Name)] {
			t.Errorf("quant type %q is registered but has no encoder", info.Name)
		}
		delete(encoders, Type(info.Name))
		if Type(info.Name).Map() != info.Map {
			t.Errorf("%s: Map() is not the registry's code book", info.Name)
		}
	}
	for ty := range encoders {
		t.Errorf("encoder for %q, which the registry does not know", ty)
	}
}

func TestParamErrors(t *testing.T) {
	for _, c := range []struct {
		p     Params
		param string
	}{
		{Params{Type: "nf5", BlockSize: 64}, "type"},
		{Params{Type: NF4, BlockSize: 48}, "blocksize"},
		{Params{Type: FP4, BlockSize: 8192}, "blocksize"},
	} {
		err := c.p.Validate()
		var pe *ParamError
		if !errors.As(err, &pe) || pe.Param != c.param || !errors.Is(err, ErrParams) {
			t.Errorf("%+v: %v, want a ParamError for %s", c.p, err, c.param)
		}
	}
	if err := DefaultParams().Validate(); err != nil {
		t.Errorf("default params: %v", err)
	}
}
