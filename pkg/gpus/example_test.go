package gpus_test

import (
	"errors"
	"fmt"
	"log"

	"github.com/nf4pipe/nf4pipe/pkg/gpus"
)

// GPUs by preset or size, with per-device caps as accelerate's max_memory
// takes them; a cap above the device's memory is refused.
func ExampleParse() {
	gs, err := gpus.Parse("rtx4090x2,24GiB")
	if err != nil {
		log.Fatal(err)
	}
	if err := gpus.ApplyMaxMemory(gs, "1:20GiB"); err != nil {
		log.Fatal(err)
	}
	for _, g := range gs {
		fmt.Printf("%d %s: cc %d, plans with %.2f GiB\n", g.Index, g.Name, g.CC(), float64(g.Capacity())/float64(gpus.GiB))
	}
	err = gpus.ApplyMaxMemory(gs, "2:30GiB")
	fmt.Println(errors.Is(err, gpus.ErrCapOverTotal), err)
	// Output:
	// 0 GeForce RTX 4090 24GB: cc 89, plans with 23.99 GiB
	// 1 GeForce RTX 4090 24GB: cc 89, plans with 20.00 GiB
	// 2 GPU 24.00 GiB: cc 0, plans with 24.00 GiB
	// true gpus: cap above the device's memory: device 2: 30.00 GiB is more than its 24.00 GiB
}
