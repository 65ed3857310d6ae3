package plan

import "github.com/nf4pipe/nf4pipe/pkg/gpus"

// DriverInventory is set by a CUDA build to list GPUs through the driver;
// nil in the default build, where nvidia-smi is asked instead.
var DriverInventory gpus.Inventory
