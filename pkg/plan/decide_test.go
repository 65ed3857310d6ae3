package plan

import (
	"os"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/gpus"
)

func mustGPUs(t *testing.T, spec string) []gpus.GPU {
	t.Helper()
	gs, err := gpus.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	return gs
}

func TestShowReports(t *testing.T) {
	if os.Getenv("PLAN_SHOW") == "" {
		t.Skip("set PLAN_SHOW=1 to print reports")
	}
	for _, x := range []struct{ cfg, gpus string }{
		{"meta-llama__Llama-3.1-8B.json", "t4"},
		{"meta-llama__Llama-3.1-70B.json", "24GiB,24GiB"},
		{"google__gemma-2-9b-it.json", "t4"},
		{"google__gemma-2-9b-it.json", "a100-40"},
	} {
		m := loadConfig(t, x.cfg)
		p, err := Make(m, mustGPUs(t, x.gpus), DefaultSettings())
		if err != nil {
			t.Fatal(err)
		}
		p.WriteReport(os.Stdout)
	}
}
