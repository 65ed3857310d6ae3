// Command verify checks a 4-bit tensor stream or bitsandbytes checkpoint
// against the model it came from; see pkg/verify.
package main

import (
	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/pkg/verify"
)

func main() { cli.Main(verify.App()) }
