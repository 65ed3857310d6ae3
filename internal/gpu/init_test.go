//go:build cuda

package gpu

import (
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nf4pipe/nf4pipe/internal/gpu/cudainit"
	"gorgonia.org/cu"
)

// TestCuInitIsOurs checks, in this CUDA-build binary, what cudainit relies
// on: cuInit is defined in the executable (cuinit.c), neither imported from
// libcuda.so.1 nor exported to it, so every call to cuInit linked in (that of
// gorgonia.org/cu's package init among them) lands in the one that does
// nothing. It needs no GPU.
func TestCuInitIsOurs(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Not imported: cu's reference was bound when linking, to the one
	// definition the link had, ours (the link would have failed without).
	dyn, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range dyn {
		if s.Name == "cuInit" {
			t.Errorf("cuInit is in the dynamic symbol table (section %v): imported, calls may reach the driver's; exported, the driver may reach ours", s.Section)
		}
	}
	syms, err := f.Symbols()
	if errors.Is(err, elf.ErrNoSymbols) {
		return // go test strips the binary; go test -c does not
	}
	if err != nil {
		t.Fatal(err)
	}
	defined := false
	for _, s := range syms {
		if s.Name == "cuInit" && s.Section != elf.SHN_UNDEF && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			defined = true
		}
	}
	if !defined {
		t.Error("the executable does not define cuInit")
	}
}

// TestDriverInitDeferred runs this test binary again, so that nothing has
// asked for a GPU yet: after every package init (cu's included) the driver
// must not be initialized, a driver call must fail as before cuInit, and
// Count must then initialize it and find the GPUs. It needs a GPU.
func TestDriverInitDeferred(t *testing.T) {
	if os.Getenv("NF4PIPE_INIT_CHILD") != "" {
		if cudainit.Initialized() {
			t.Fatal("the CUDA driver was initialized before any GPU was asked for")
		}
		if _, err := cu.NumDevices(); !errors.Is(err, cu.NotInitialized) {
			t.Fatalf("cuDeviceGetCount before Init: %v, want %v (cu's package init reached the driver's cuInit)", err, cu.NotInitialized)
		}
		t0 := time.Now()
		n, err := Count()
		if err != nil || n == 0 || !cudainit.Initialized() {
			t.Fatalf("Count after start-up: %d, %v (initialized: %v)", n, err, cudainit.Initialized())
		}
		t.Logf("child: driver initialized on demand in %.1f ms, %d GPUs", time.Since(t0).Seconds()*1e3, n)
		return
	}
	if n, err := Count(); err != nil || n == 0 {
		t.Skipf("needs a CUDA GPU: %d, %v", n, err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestDriverInitDeferred$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "NF4PIPE_INIT_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "child: driver initialized on demand") {
		t.Fatalf("child process: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "child:") {
			t.Log(strings.TrimSpace(l))
		}
	}
}
